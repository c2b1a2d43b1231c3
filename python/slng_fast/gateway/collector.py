"""The cyclic garbage collector, set for a long-running stream server.

CPython's default thresholds (700, 10, 10) make a full collection run whenever the
objects that survived younger ones grow by a quarter; with a few hundred live sessions
(a few hundred tracked objects each) that is a pause of tens of milliseconds, and every
frame due meanwhile arrives late by as much (bench/RESULTS.md: the p99 tail). So a
serving process freezes what start-up built (modules, tables, configuration: scanned
never again) and collects less often. Most per-frame garbage is freed by reference
counting anyway; the collector only exists for cycles."""

from __future__ import annotations

import gc
import os

# A young collection after this many net new container objects (default 700); the
# middle one after this many young ones (default 10); a full one after this many middle
# ones (default 10) and, as always, only once the survivors have grown by a quarter.
THRESHOLDS = (50_000, 20, 100)


def tune_collector() -> None:
    """Call once in a serving process, after its imports and before its first session.
    ``SLNG_GC=default`` keeps CPython's settings (for comparison)."""
    if os.environ.get("SLNG_GC", "tuned") == "default":
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
