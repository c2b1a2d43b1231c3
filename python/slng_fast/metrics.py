"""The gateway's metrics in Prometheus' text format: a few counters, gauges and histograms
with labels, kept in plain dicts (one process, one event loop: no locks needed), rendered
on ``GET /metrics``. Pure: no I/O, no clock."""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass, field

Labels = tuple[tuple[str, str], ...]

# Seconds; time to first audio and gateway-added latency live between 1 ms and a few s.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# Error codes that are refusals by a limit, and the limit's name.
REFUSALS = {
    "auth_failed": "auth", "too_many_connections": "concurrent_connections",
    "rate_limited": "messages_per_minute", "message_too_large": "message_size",
    "text_too_long": "text_length",
}


def _labels(labels: dict[str, str]) -> Labels:
    return tuple(sorted(labels.items()))


def _render_labels(labels: Labels, extra: str = "") -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in labels]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


@dataclass
class Histogram:
    buckets: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def observe(self, value: float) -> None:
        if not self.counts:
            self.counts = [0] * len(self.buckets)
        i = bisect.bisect_left(self.buckets, value)
        if i < len(self.counts):
            self.counts[i] += 1
        self.total += value
        self.n += 1


@dataclass
class Metric:
    name: str
    kind: str  # counter, gauge, histogram
    help: str
    values: dict[Labels, float] = field(default_factory=lambda: defaultdict(float))
    histograms: dict[Labels, Histogram] = field(default_factory=dict)


class Metrics:
    """The registry of one gateway process."""

    def __init__(self) -> None:
        self._metrics: dict[str, Metric] = {}
        for name, kind, text in (
            ("slng_sessions_active", "gauge", "Sessions open now, by provider and tier."),
            ("slng_sessions_total", "counter", "Sessions started, by provider and tier."),
            ("slng_time_to_first_audio_seconds", "histogram",
             "From a flush to the utterance's first audio sent to the client, by provider."),
            ("slng_added_latency_seconds", "histogram",
             "From an upstream frame received to the client frames it produced sent, "
             "by provider."),
            ("slng_audio_seconds_total", "counter", "Audio sent or received, by provider."),
            ("slng_characters_total", "counter", "Text characters synthesized, by provider."),
            ("slng_errors_total", "counter", "Error events sent, by code."),
            ("slng_refusals_total", "counter", "Requests refused by a limit, by limit."),
            ("slng_provider_switches_total", "counter",
             "Sessions moved to their next provider, by provider pair and reason."),
            ("slng_warm_connections_used_total", "counter",
             "Sessions' upstreams taken ready from the worker's warm pool, by provider."),
            ("slng_upstream_reconnects_total", "counter",
             "Upstream connections reopened within a session, by provider."),
            ("slng_tasks_living", "gauge",
             "Trio tasks alive in this worker's event loop, read at each scrape: with no "
             "session open it stays put, so growth is a leaked task."),
        ):
            self._metrics[name] = Metric(name, kind, text)

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        self._metrics[name].values[_labels(labels)] += value

    def set(self, name: str, value: float, **labels: str) -> None:
        self._metrics[name].values[_labels(labels)] = value

    def observe(self, name: str, value: float, **labels: str) -> None:
        self.histogram(name, **labels).observe(value)

    def histogram(self, name: str, **labels: str) -> Histogram:
        """One labelled histogram, for a caller that observes it once per frame."""
        metric = self._metrics[name]
        key = _labels(labels)
        histogram = metric.histograms.get(key)
        if histogram is None:
            histogram = metric.histograms[key] = Histogram()
        return histogram

    def error(self, code: str) -> None:
        """One error event sent; a refusal by a limit counts as that too."""
        self.inc("slng_errors_total", code=code)
        limit = REFUSALS.get(code)
        if limit is not None:
            self.inc("slng_refusals_total", limit=limit)

    def value(self, name: str, **labels: str) -> float:
        return self._metrics[name].values.get(_labels(labels), 0.0)

    def render(self) -> str:
        lines: list[str] = []
        for metric in self._metrics.values():
            lines.append(f"# HELP {metric.name} {metric.help}")
            lines.append(f"# TYPE {metric.name} {metric.kind}")
            for labels, value in sorted(metric.values.items()):
                lines.append(f"{metric.name}{_render_labels(labels)} {value:g}")
            for labels, h in sorted(metric.histograms.items()):
                running = 0
                for bound, count in zip(h.buckets, h.counts):
                    running += count
                    le = 'le="%g"' % bound
                    lines.append(f"{metric.name}_bucket{_render_labels(labels, le)} {running}")
                inf = 'le="+Inf"'
                lines.append(f"{metric.name}_bucket{_render_labels(labels, inf)} {h.n}")
                lines.append(f"{metric.name}_sum{_render_labels(labels)} {h.total:g}")
                lines.append(f"{metric.name}_count{_render_labels(labels)} {h.n}")
        return "\n".join(lines) + "\n"
