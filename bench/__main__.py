"""`python -m bench [--quick] [--only NAME,...]` (make bench ARGS=...): run the speed benchmarks,
write bench/results/<section>.json, regenerate BENCHMARKS.md from every result present.

Sections (bench/sections.py): throughput, trial_cost, tutorial, overhead, scaling, workers, load, serving,
sweep_efficiency, fm. Each runs in its own process (and starts its own children where isolation
matters). The longest sections of the full run on 2 cores: sweep_efficiency, hours (random search's 60
trials of 7 models x 3 seeds, two arms side by side; its own timeout is 12 h), fm's 25M epoch, and load about 8
minutes (4 worker commands x 400 trials, on two backends); --quick uses
tiny sizes (about 5 minutes) and only checks that the benchmark works.

    python -m bench                      # everything, full sizes
    python -m bench --quick              # a smoke test
    python -m bench --only throughput,scaling
    python -m bench --only load --timeout 7200   # the load section alone (PostgreSQL: a throwaway cluster)
    python -m bench --report             # only regenerate BENCHMARKS.md from bench/results/
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

from bench import common
from bench.report import write_markdown
from bench.sections import DEFAULT_TIMEOUT, ORDER, TIMEOUTS, module_of, timeout_of


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the benchmark, not the targets")
    parser.add_argument("--only", default="", help=f"comma-separated sections: {','.join(ORDER)}")
    parser.add_argument("--results", type=Path, default=common.RESULTS, help="default bench/results/")
    parser.add_argument("--markdown", type=Path, default=common.REPO / "BENCHMARKS.md", help="default BENCHMARKS.md")
    parser.add_argument("--report", action="store_true", help="run nothing; regenerate the markdown")
    parser.add_argument("--timeout", type=float, default=None,
                        help=f"seconds per section at most (default {DEFAULT_TIMEOUT:.0f}; "
                             + ", ".join(f"{n} {t:.0f}" for n, t in TIMEOUTS.items()) + ")")
    args = parser.parse_args(argv)
    args.sections = [s.strip() for s in args.only.split(",") if s.strip()] or list(ORDER)
    unknown = [s for s in args.sections if s not in ORDER]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(ORDER)}")
    return args


def run_section(name: str, quick: bool, out: Path, timeout: float) -> bool:
    """Run one section in its own process; on failure write a result that says so."""
    cmd = [sys.executable, "-m", module_of(name), "--out", str(out)] + (["--quick"] if quick else [])
    print(f"== {name}: {' '.join(shlex.quote(c) for c in cmd[1:])}", flush=True)
    started = time.perf_counter()
    try:
        # cwd: the scratch folder, where MLflow's artifacts (./mlruns) of the timed runs may go
        proc = subprocess.run(cmd, cwd=common.scratch(), env=common.child_env(), timeout=timeout)
        error = None if proc.returncode == 0 else f"exited with {proc.returncode} (see the console output)"
    except subprocess.TimeoutExpired:
        error = f"stopped after {timeout:.0f} s (--timeout)"
    if error:
        print(f"== {name}: FAILED, {error}", file=sys.stderr, flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({
            "schema": common.SCHEMA, "section": name, "quick": quick, "command": " ".join(cmd[1:3]),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "wall_s": round(time.perf_counter() - started, 2),
            "machine": common.machine(), "figures": {}, "targets": [], "notes": [], "error": error}, indent=2))
        return False
    print(f"== {name}: done in {time.perf_counter() - started:.0f}s", flush=True)
    return True


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    command = "python -m bench" + "".join(f" {shlex.quote(a)}" for a in argv)
    ok = True
    if not args.report:
        own_tmp = common.TMP_ENV not in os.environ
        tmp = Path(os.environ.get(common.TMP_ENV) or tempfile.mkdtemp(prefix="mfexp-bench-"))
        os.environ[common.TMP_ENV] = str(tmp)
        try:
            for name in args.sections:
                ok &= run_section(name, args.quick, args.results / f"{name}.json", timeout_of(name, args.timeout))
        finally:
            if own_tmp:
                shutil.rmtree(tmp, ignore_errors=True)
        args.results.mkdir(parents=True, exist_ok=True)
        (args.results / "last_run.json").write_text(json.dumps({"command": command, "ok": ok}) + "\n")
    path = write_markdown(args.results, args.markdown)
    print(f"results: {args.results}/  summary: {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
