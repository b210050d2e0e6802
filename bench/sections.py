"""The benchmark sections, in the order `python -m bench` runs them (longest last)."""
from __future__ import annotations

SECTIONS = {
    "throughput": "bench.throughput",  # 1. samples/s per model and batch size
    "tutorial": "bench.tutorial_compare",  # 2. the tutorial's own code, side by side
    "overhead": "bench.overhead",  # 3. per-trial fixed overhead in a sweep
    "scaling": "bench.scaling",  # 5. 1M / 10M / 25M ML-25M-shaped ratings
    "workers": "bench.workers",  # 6. trials/h for 1 and 2 workers
    "load": "bench.load",  # issue 13: 4 worker commands x 400 short trials, journal and PostgreSQL: exact counts
    "serving": "bench.serving",  # issue 7: one user's scores, 20k predictions via pyfunc
    "sweep_efficiency": "bench.sweep_efficiency",  # 4. TPE + pruning vs random search
    "fm": "bench.fm",  # issue 10: fm and svdpp samples/s, one fm epoch on 25M synthetic ratings
}
ORDER = tuple(SECTIONS)


def module_of(section: str) -> str:
    return SECTIONS[section]
