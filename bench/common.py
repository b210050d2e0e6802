"""What every benchmark section shares: the machine's description, result files, peak RSS,
child processes, a pre-built MLflow store. Imports neither MXNet nor MLflow at module level."""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Optional, Sequence

from mlflow import MlflowClient

from bench.sections import module_of

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
SCHEMA = 1
THREAD_VARS = ("MXNET_CPU_WORKER_NTHREADS", "OMP_NUM_THREADS", "MXNET_ENGINE_TYPE")
TMP_ENV = "MFEXP_BENCH_TMP"  # a scratch folder shared by the sections of one `python -m bench`


# --- the machine ------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gb() -> Optional[float]:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 ** 2, 1)
    except OSError:
        pass
    return None


def _version(dist: str) -> Optional[str]:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    """CPU model, cores, RAM, library versions and the load at measurement time."""
    mxnet = _version("mxnet") or _version("mxnet-cu112")
    return {
        "cpu": _cpu_model(), "cores": os.cpu_count(), "cores_usable": len(os.sched_getaffinity(0)),
        "ram_gb": _ram_gb(), "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(), "mxnet": mxnet, "numpy": _version("numpy"),
        "optuna": _version("optuna"), "mlflow": _version("mlflow"),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "threads": {k: os.environ.get(k) for k in THREAD_VARS},
    }


# --- memory -----------------------------------------------------------------------------------
def _status_kb(field: str) -> Optional[int]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss_mb() -> Optional[float]:
    """This process's peak resident set (VmHWM), in MiB."""
    kb = _status_kb("VmHWM")
    return None if kb is None else round(kb / 1024, 1)


def rss_mb() -> Optional[float]:
    kb = _status_kb("VmRSS")
    return None if kb is None else round(kb / 1024, 1)


def reset_peak_rss() -> bool:
    """Start VmHWM again from the current RSS (Linux: echo 5 > /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# --- results ----------------------------------------------------------------------------------
def target(name: str, goal: str, measured: Optional[float], unit: str, met: Optional[bool],
           note: str = "") -> dict[str, Any]:
    """One target line: what the issue asks for, what was measured, whether it was met
    (None: not measured)."""
    return {"name": name, "goal": goal, "measured": measured, "unit": unit, "met": met, "note": note}


def at_least(value: Optional[float], bound: float) -> Optional[bool]:
    return None if value is None else bool(value >= bound)


def at_most(value: Optional[float], bound: float) -> Optional[bool]:
    return None if value is None else bool(value <= bound)


def write_result(path: Path, section: str, quick: bool, started: float, figures: dict, targets: list,
                 notes: Sequence[str] = (), run: Optional[dict] = None) -> dict[str, Any]:
    """`run`: the command, clock, wall time and machine of the run whose figures these are, when they
    are re-derived from an earlier result rather than measured now."""
    result = {
        "schema": SCHEMA, "section": section, "quick": quick,
        "command": f"python -m {module_of(section)}" + (" --quick" if quick else ""),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "wall_s": round(time.perf_counter() - started, 2),
        "machine": machine(), "figures": figures, "targets": targets, "notes": list(notes),
    }
    result.update({k: run[k] for k in ("command", "finished", "wall_s", "machine")} if run else {})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, default=_jsonable) + "\n")
    tmp.replace(path)
    return result


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def section_args(description: str, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line every section takes: --quick, --out FILE."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of the section")
    parser.add_argument("--out", type=Path, help="result file (default bench/results/<section>.json)")
    return parser.parse_args(argv)


# --- processes and scratch space --------------------------------------------------------------
def scratch() -> Path:
    """The shared scratch folder ($MFEXP_BENCH_TMP, else a fresh temporary folder)."""
    folder = os.environ.get(TMP_ENV)
    if not folder:
        folder = tempfile.mkdtemp(prefix="mfexp-bench-")
        os.environ[TMP_ENV] = folder
    Path(folder).mkdir(parents=True, exist_ok=True)
    return Path(folder)


def sweep_root(name: str) -> Path:
    """A sweep.root of its own for one timed sweep (a reused one would resume old studies)."""
    root = scratch() / f"sweeps-{name}-{os.getpid()}"
    shutil.rmtree(root, ignore_errors=True)
    return root


def child_env(threads: Optional[int] = None, **extra: str) -> dict[str, str]:
    """The environment for a child process; `threads` sets MXNet's and OpenMP's thread counts."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    if threads is not None:
        env["MXNET_CPU_WORKER_NTHREADS"] = env["OMP_NUM_THREADS"] = str(threads)
    env.update(extra)
    return env


def run_child(args: Sequence[str], *, env: Optional[dict] = None, cwd: Optional[Path] = None,
              timeout: Optional[float] = None) -> tuple[float, subprocess.CompletedProcess]:
    """Run `python ARGS`; (wall seconds from launch to exit, the completed process)."""
    start = time.perf_counter()
    # in the scratch folder: MLflow puts a new experiment's artifacts under ./mlruns of the cwd
    proc = subprocess.run([sys.executable, *args], env=env or child_env(), cwd=cwd or scratch(),
                          capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"`python {' '.join(args)}` exited with {proc.returncode}:\n{tail}")
    return wall, proc


def last_json_line(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON line in the child's output")


def mlflow_store(name: str) -> str:
    """A fresh, ready MLflow sqlite store `name`.db in the scratch folder. A new store spends
    seconds on its schema migrations; a user pays that once, on the first run ever, so every
    store here is a copy of one migrated template and no timed run pays it."""
    folder = scratch()
    template = folder / "mlflow-template.db"
    if not template.exists():
        MlflowClient(f"sqlite:///{template}").search_experiments()
    db = folder / f"{name}.db"
    shutil.copyfile(template, db)
    return f"sqlite:///{db}"


def quiet_logs() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for name in ("alembic", "mlflow", "urllib3", "git", "optuna", "mfexp"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def say(section: str, message: str) -> None:
    print(f"[bench {section}] {message}", flush=True)


def median(values: Sequence[float]) -> Optional[float]:
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return None
    mid = len(vals) // 2
    return vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2
