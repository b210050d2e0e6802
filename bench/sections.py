"""The benchmark sections, in the order `python -m bench` runs them (longest last)."""
from __future__ import annotations

from typing import Optional

SECTIONS = {
    "throughput": "bench.throughput",  # 1. samples/s per model and batch size
    "lean": "bench.lean",  # one trial's samples/s, this tree against the commit before the lean step
    "trial_cost": "bench.trial_cost",  # trials/hour, one at a time vs a population
    "tutorial": "bench.tutorial_compare",  # 2. the tutorial's own code, side by side
    "overhead": "bench.overhead",  # 3. per-trial fixed overhead in a sweep
    "scaling": "bench.scaling",  # 5. 1M / 10M / 25M ML-25M-shaped ratings
    "workers": "bench.workers",  # 6. trials/h for 1 and 2 workers
    "load": "ops.load",  # issue 13: 4 worker commands x 400 short trials, journal and PostgreSQL: exact counts
    "serving": "bench.serving",  # issue 7: one user's scores, 20k predictions via pyfunc
    "sweep_efficiency": "bench.sweep_efficiency",  # 4. TPE + pruning vs random search
    "fm": "bench.fm",  # issue 10: fm and svdpp samples/s, one fm epoch on 25M synthetic ratings
}
ORDER = tuple(SECTIONS)
DEFAULT_TIMEOUT = 3600.0
# sections whose full run needs more than DEFAULT_TIMEOUT: sweep_efficiency's random arms run 60 trials of each of
# 7 models x 3 seeds, hours on 2 cores (BENCHMARKS.md, sweep_efficiency)
TIMEOUTS = {"sweep_efficiency": 12 * 3600.0}


def module_of(section: str) -> str:
    return SECTIONS[section]


def timeout_of(section: str, given: Optional[float] = None) -> float:
    """Seconds a section may run: --timeout when given, else its own default."""
    return given if given is not None else TIMEOUTS.get(section, DEFAULT_TIMEOUT)
