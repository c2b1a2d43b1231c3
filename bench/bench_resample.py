"""Benchmark of the native streaming resampler against soxr.

    python bench/bench_resample.py [--seconds S] [--repeats N]

For each conversion the same PCM16 stream is fed in 20 ms chunks to
``slng_fast._native.Resampler`` (bytes in, bytes out) and to
``soxr.ResampleStream(in, out, 1, dtype="int16", quality="HQ")`` (int16 arrays
in and out, which spares soxr the bytes conversions), alternating the two in
each repetition. Reported: microseconds of CPU per second of audio (best and
median of the repetitions) and their ratio; the latency each adds (the audio
held back while streaming, plus the largest group delay over the pass band,
measured from the phases of tone pairs); and quality figures measured on PCM16
in and out (least-squares sine fits over one second, 50 ms skipped at each end).
It also measures the latency of every supported conversion (``--no-all-pairs`` skips it).

``run()`` returns the same figures as a list of dicts, for other bench drivers.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections.abc import Callable

# The quality fits use numpy's BLAS; keep its threads from spinning on the
# cores the timed code runs on (only effective if numpy is not imported yet).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import soxr  # type: ignore[import-untyped]

from slng_fast._native import SUPPORTED_RATES, Resampler

CONVERSIONS = [(24000, 16000), (16000, 24000), (22050, 24000), (24000, 8000)]
CHUNK_SECONDS = 0.02
FULL_SCALE = 32768.0
SKIP_SECONDS = 0.05

Convert = Callable[[int, int, bytes], bytes]


# ---- the two resamplers as whole-stream functions (for quality) ----------------


def ours_whole(in_rate: int, out_rate: int, data: bytes) -> bytes:
    r = Resampler(in_rate, out_rate)
    return r.process(data) + r.flush()


def soxr_whole(in_rate: int, out_rate: int, data: bytes) -> bytes:
    s = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality="HQ")
    x = np.frombuffer(data, dtype="<i2")
    head: bytes = s.resample_chunk(x).tobytes()
    tail: bytes = s.resample_chunk(x[:0], last=True).tobytes()
    return head + tail


# ---- timing --------------------------------------------------------------------


def _stream(in_rate: int, seconds: float) -> np.ndarray:
    t = np.arange(int(in_rate * seconds)) / in_rate
    rng = np.random.default_rng(0)
    x = 9000 * np.sin(2 * np.pi * 440 * t) + 6000 * np.sin(2 * np.pi * 2500 * t) + rng.normal(0, 300, t.size)
    out: np.ndarray = np.round(x).astype("<i2")
    return out


def _time_ours(in_rate: int, out_rate: int, chunks: list[bytes]) -> float:
    r = Resampler(in_rate, out_rate)
    process = r.process
    start = time.perf_counter()
    for c in chunks:
        process(c)
    r.flush()
    return time.perf_counter() - start


def _time_soxr(in_rate: int, out_rate: int, chunks: list[np.ndarray]) -> float:
    s = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality="HQ")
    resample = s.resample_chunk
    start = time.perf_counter()
    for c in chunks:
        resample(c)
    resample(chunks[0][:0], last=True)
    return time.perf_counter() - start


def _held_back_ms(
    in_rate: int, out_rate: int, chunks: list[np.ndarray], feed: Callable[[np.ndarray], int]
) -> tuple[float, float]:
    """Audio held back (ms) after the first chunk and at most after any later one."""
    fed = emitted = 0
    held = []
    for c in chunks:
        fed += c.size
        emitted += feed(c)
        held.append(1000 * (fed / in_rate - emitted / out_rate))
    return held[0], max(held[1:])


def latency(in_rate: int, out_rate: int, chunks: list[np.ndarray]) -> dict[str, float]:
    ours = Resampler(in_rate, out_rate)
    sx = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality="HQ")
    o_first, o_max = _held_back_ms(in_rate, out_rate, chunks, lambda c: len(ours.process(c.tobytes())) // 2)
    s_first, s_max = _held_back_ms(in_rate, out_rate, chunks, lambda c: sx.resample_chunk(c).size)
    return {
        "ours_held_first_ms": o_first,
        "ours_held_max_ms": o_max,
        "soxr_held_first_ms": s_first,
        "soxr_held_max_ms": s_max,
    }


# ---- quality ---------------------------------------------------------------------


def _tone(rate: int, freq: float, amp: float, dither: bool, seconds: float = 1.0) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    x = amp * np.sin(2 * np.pi * freq * t)
    if dither:
        x += np.random.default_rng(1).normal(0.0, 1.0, t.size)
    return np.clip(np.round(x), -32768, 32767).astype("<i2").tobytes()


def _fold(freq: float, rate: int) -> float:
    return abs(freq - rate * round(freq / rate))


def _fit(y: np.ndarray, rate: int, freqs: list[float]) -> tuple[np.ndarray, np.ndarray]:
    skip = int(SKIP_SECONDS * rate)
    y = y[skip : y.size - skip]
    t = (np.arange(y.size) + skip) / rate
    cols = [np.ones_like(t)]
    for f in freqs:
        cols += [np.sin(2 * np.pi * f * t), np.cos(2 * np.pi * f * t)]
    basis = np.column_stack(cols)
    coef, *_ = np.linalg.lstsq(basis, y, rcond=None)
    return np.hypot(coef[1::2], coef[2::2]), y - basis @ coef


def _db(x: float) -> float:
    return 20 * math.log10(max(x, 1e-12))


def _spurs(in_rate: int, out_rate: int, freq: float) -> list[float]:
    own = _fold(freq, out_rate) if freq < out_rate / 2 else None
    found: list[float] = []
    for k in (0, 1, 2):
        for g in (k * in_rate - freq, k * in_rate + freq):
            s = _fold(g, out_rate) if g > 0 else -1.0
            far = own is None or abs(s - own) >= 20
            if far and 20 < s < out_rate / 2 - 20 and all(abs(s - o) >= 20 for o in found):
                found.append(s)
    return found


def quality(convert: Convert, in_rate: int, out_rate: int) -> dict[str, float]:
    """Worst passband deviation (dB, up to 0.9 of the lower Nyquist), worst
    alias/image left by a stop-band or passband tone (dB re the tone), THD+N of
    1 kHz at -1 dBFS (dB)."""

    def run(x: bytes) -> np.ndarray:
        return np.frombuffer(convert(in_rate, out_rate, x), dtype="<i2").astype(np.float64)

    low = min(in_rate, out_rate) / 2
    passband = 0.0
    for frac in (0.01, 0.25, 0.5, 0.75, 0.9):
        f = frac * low
        (a,), _ = _fit(run(_tone(in_rate, f, 16384.0, True)), out_rate, [f])
        passband = max(passband, abs(_db(a / 16384.0)))

    if out_rate < in_rate:
        nyq = out_rate / 2
        tones = [1.02 * nyq, 1.25 * nyq, min(1.6 * nyq, 0.9 * in_rate / 2), 0.97 * in_rate / 2]
    else:
        tones = [1000.0, 0.37 * in_rate / 2, 0.9 * in_rate / 2]
    worst_spur = -300.0
    for f in tones:
        own = [f] if f < out_rate / 2 else []
        freqs = own + _spurs(in_rate, out_rate, f)
        amps, _ = _fit(run(_tone(in_rate, f, 16384.0, True)), out_rate, freqs)
        worst_spur = max([worst_spur] + [_db(a / 16384.0) for a in amps[len(own) :]])

    amp = FULL_SCALE * 10 ** (-1 / 20)
    (a,), resid = _fit(run(_tone(in_rate, 1000.0, amp, False)), out_rate, [1000.0])
    thd_n = _db(float(np.sqrt(np.mean(resid**2))) / (a / math.sqrt(2)))
    return {"passband_dev_db": passband, "worst_spur_db": worst_spur, "thd_n_db": thd_n}


def _phase(y: np.ndarray, rate: int, freq: float) -> float:
    skip = int(SKIP_SECONDS * rate)
    t = (np.arange(skip, y.size - skip)) / rate
    basis = np.column_stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)])
    (s, c), *_ = np.linalg.lstsq(basis, y[skip : y.size - skip], rcond=None)
    return math.atan2(c, s)


def group_delay_ms(convert: Convert, in_rate: int, out_rate: int, step: float = 20.0) -> float:
    """Largest group delay (ms) over the pass band (to 0.9 of the lower Nyquist),
    relative to the output's own time: from the phases of tones `step` Hz apart."""
    low = min(in_rate, out_rate) / 2
    worst = 0.0
    for frac in np.linspace(0.02, 0.9, 12):
        f = frac * low - step
        phases = []
        for g in (f, f + step):
            y = np.frombuffer(convert(in_rate, out_rate, _tone(in_rate, g, 16384.0, False)), dtype="<i2")
            phases.append(_phase(y.astype(np.float64), out_rate, g))
        turn = (phases[0] - phases[1] + math.pi) % (2 * math.pi) - math.pi
        worst = max(worst, 1000 * turn / (2 * math.pi * step))
    return worst


def held_back_ms(in_rate: int, out_rate: int) -> float:
    """Audio held back at most while streaming 20 ms chunks of silence (ms)."""
    r = Resampler(in_rate, out_rate)
    n = int(in_rate * CHUNK_SECONDS)
    fed = emitted = 0
    worst = 0.0
    for _ in range(10):
        fed += n
        emitted += len(r.process(bytes(2 * n))) // 2
        worst = max(worst, 1000 * (fed / in_rate - emitted / out_rate))
    return worst


def all_pairs_latency() -> dict[tuple[int, int], tuple[float, float]]:
    """Per supported conversion: measured latency (held back plus largest pass-band
    group delay) and the design latency the resampler declares, in ms."""
    out = {}
    for i in SUPPORTED_RATES:
        for o in SUPPORTED_RATES:
            if i != o:
                measured = held_back_ms(i, o) + group_delay_ms(ours_whole, i, o)
                out[i, o] = (measured, 1000 * Resampler(i, o).latency_seconds)
    return out


# ---- driver -----------------------------------------------------------------------


def run(seconds: float = 5.0, repeats: int = 7) -> list[dict[str, object]]:
    """Time all conversions first, then measure latency and quality."""
    results: list[dict[str, object]] = []
    streams = {}
    for in_rate, out_rate in CONVERSIONS:
        x = _stream(in_rate, seconds)
        n = int(in_rate * CHUNK_SECONDS)
        arrays = [x[i : i + n] for i in range(0, x.size, n)]
        streams[in_rate, out_rate] = arrays
        chunks = [a.tobytes() for a in arrays]
        ours_t, soxr_t = [], []
        for _ in range(repeats):
            ours_t.append(_time_ours(in_rate, out_rate, chunks) / seconds * 1e6)
            soxr_t.append(_time_soxr(in_rate, out_rate, arrays) / seconds * 1e6)
        results.append(
            {
                "conversion": f"{in_rate}->{out_rate}",
                "in_rate": in_rate,
                "out_rate": out_rate,
                "chunk_ms": CHUNK_SECONDS * 1000,
                "ours_us_per_s_best": min(ours_t),
                "ours_us_per_s_median": statistics.median(ours_t),
                "soxr_hq_us_per_s_best": min(soxr_t),
                "soxr_hq_us_per_s_median": statistics.median(soxr_t),
                "speedup_best": min(soxr_t) / min(ours_t),
                "speedup_median": statistics.median(soxr_t) / statistics.median(ours_t),
                "ours_delay_input_samples": Resampler(in_rate, out_rate).delay_input_samples,
            }
        )
    for row, key in zip(results, CONVERSIONS):
        row.update(latency(*key, streams[key][:25]))
        row["ours_group_delay_ms"] = group_delay_ms(ours_whole, *key)
        row["soxr_group_delay_ms"] = group_delay_ms(soxr_whole, *key)
        row["ours_design_latency_ms"] = 1000 * Resampler(*key).latency_seconds
        row.update({f"ours_{k}": v for k, v in quality(ours_whole, *key).items()})
        row.update({f"soxr_{k}": v for k, v in quality(soxr_whole, *key).items()})
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="audio per timed run")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per resampler")
    parser.add_argument(
        "--no-all-pairs", dest="all_pairs", action="store_false", help="skip the latency of every conversion"
    )
    args = parser.parse_args(argv)
    rows = run(args.seconds, args.repeats)
    print(f"20 ms PCM16 chunks, {args.seconds:g} s of audio per run, {args.repeats} runs; us per second of audio")
    print(f"{'conversion':<14}{'ours best/med':>16}{'soxr HQ best/med':>19}{'speedup b/m':>14}")
    for r in rows:
        print(
            f"{r['conversion']:<14}"
            f"{r['ours_us_per_s_best']:>8.0f}/{r['ours_us_per_s_median']:<7.0f}"
            f"{r['soxr_hq_us_per_s_best']:>11.0f}/{r['soxr_hq_us_per_s_median']:<7.0f}"
            f"{r['speedup_best']:>8.2f}/{r['speedup_median']:<5.2f}"
        )
    print(
        "\nlatency (ms): held back while streaming, after the first chunk / at most later;"
        " + largest pass-band group delay = latency (ours: design latency)"
    )
    for r in rows:
        ours = r["ours_held_max_ms"] + r["ours_group_delay_ms"]
        sx = r["soxr_held_max_ms"] + r["soxr_group_delay_ms"]
        print(
            f"{r['conversion']:<14} ours {r['ours_held_first_ms']:4.2f} / {r['ours_held_max_ms']:4.2f}"
            f" + {r['ours_group_delay_ms']:4.2f} = {ours:4.2f} ({r['ours_design_latency_ms']:4.2f})"
            f"   soxr HQ {r['soxr_held_first_ms']:4.1f} / {r['soxr_held_max_ms']:4.1f}"
            f" + {r['soxr_group_delay_ms']:4.2f} = {sx:4.1f}"
        )
    print("\nquality, PCM16 in/out: passband deviation (dB) | worst alias/image (dB) | THD+N 1 kHz -1 dBFS (dB)")
    for r in rows:
        print(
            f"{r['conversion']:<14} ours {r['ours_passband_dev_db']:.4f} | {r['ours_worst_spur_db']:6.1f} |"
            f" {r['ours_thd_n_db']:6.1f}    soxr HQ {r['soxr_passband_dev_db']:.4f} |"
            f" {r['soxr_worst_spur_db']:6.1f} | {r['soxr_thd_n_db']:6.1f}"
        )
    if args.all_pairs:
        lat = all_pairs_latency()
        print("\nlatency of every conversion (ms): measured (held back + group delay), rows in, columns out")
        print(f"{'':>7}" + "".join(f"{o:>7}" for o in SUPPORTED_RATES))
        for i in SUPPORTED_RATES:
            cells = "".join(f"{lat[i, o][0]:7.2f}" if i != o else f"{'-':>7}" for o in SUPPORTED_RATES)
            print(f"{i:>7}{cells}")
        (wi, wo), (m, d) = max(lat.items(), key=lambda kv: kv[1][0])
        print(f"worst measured {m:.2f} ms ({wi}->{wo}, design {d:.2f}); worst design"
              f" {max(d for _, d in lat.values()):.2f} ms")


if __name__ == "__main__":
    main()
