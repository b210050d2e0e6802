"""`make gpu-check` (= python -m ops.gpu_check [overrides]): on a GPU host, check what a CPU never
exercises. One line per check; exit 0 when every check passes, 1 when one fails, and 2 with a one-line
message on a host where MXNet sees no GPU.

    python -m ops.gpu_check                                 # ML-100K u1, cached or fetched
    python -m ops.gpu_check data=file data.path=ratings.tsv  # any ratings file (Hydra overrides)

Checks, each model of conf/model/*.yaml in turn:
  train      one epoch on gpu:0 twice and on the CPU, same seed: test RMSE on both and their
             difference (must stay under TOLERANCE), the two GPU runs identical (the sweep replays
             its best trials and expects the same network), samples/s on both; at the tutorial's
             settings and at the default sweep's (row-sparse gradients, Adam, batch 512)
  population four trials of a model that holds populations (plain, biased, mlp, dropout) as one network
             on gpu:0 and on the CPU: each member's test RMSE agrees within TOLERANCE
  serve      a model trained on gpu:0 and logged to MLflow loads on the CPU and predicts the test
             RMSE the GPU measured; its run is tagged mfexp.device=gpu:0 and its requirements name
             the installed MXNet build
then `auto` (train.device and sweep.devices resolve to the GPUs) and, with two GPUs or more, a tiny
sweep on gpu:0 and gpu:1 whose trials must run on both.
"""
from __future__ import annotations

import contextlib
import copy
import io
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

from hydra import compose as hydra_compose, initialize_config_dir
from hydra.errors import HydraException
import mlflow
import mxnet as mx
import numpy as np
from omegaconf.errors import OmegaConfBaseException
import pandas as pd

from mfexp import cli
from mfexp.data import load_dataset
from mfexp.errors import ConfigError, friendly_errors
from mfexp.experiment import run
from mfexp.metrics import rmse
from mfexp.models import io as model_io, validate
from mfexp.population import Member, fit_population, supports
from mfexp.sweep.plan import build_plan
from mfexp.sweep.runner import workers_line
from mfexp.track.tracker import _requirements
from mfexp.train import build_net, fit, quiet_mxnet, resolve_device, visible_gpus

REPO = Path(__file__).resolve().parent.parent
TOLERANCE = 0.01  # |test RMSE on gpu - on cpu| after one epoch: summation order differs, not the maths
SERVE_TOLERANCE = 1e-4  # the served model's RMSE against the one measured at training
SETTINGS = {
    "tutorial": [],
    "sweep": ["train.sparse_grad=true", "train.optimizer=adam", "train.lr=0.002", "train.batch_size=512",
              "train.wd=0", "train.reg=0.01"],
}
NO_GPU_EXIT = 2


@dataclass
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.name:<22} {self.detail}"


def models() -> list[str]:
    """Every model with a config in conf/model/, so a new model is checked without editing this file."""
    return sorted(p.stem for p in (REPO / "conf" / "model").glob("*.yaml"))


def no_gpu_reason() -> Optional[str]:
    """None when MXNet sees a GPU; else one line saying why not and what to do."""
    try:
        if visible_gpus() > 0:
            return None
        why = "MXNet sees no GPU"
    except ConfigError as err:
        why = str(err).split(". ")[0]
    if not mx.runtime.Features().is_enabled("CUDA"):
        hint = "the CPU build of mxnet is installed: on a GPU host run make install GPU=1 (mxnet-cu112)"
    else:
        listed = _nvidia_smi_gpus()
        hint = ("mxnet-cu112 is installed, " + (f"nvidia-smi lists {listed} GPU(s): the driver must support "
                "CUDA 11.2 and the CUDA 11.2 runtime must be installed" if listed else
                "nvidia-smi lists none: install the NVIDIA driver"))
    return f"gpu-check: {why} on this host ({hint}); nothing to check."


def _nvidia_smi_gpus() -> int:
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in out.splitlines())


def compose(overrides: Sequence[str]):
    """The run config (conf/config.yaml) with one epoch, no progress bar, no tracking, and `overrides`."""
    cli.register_schema()
    try:
        with initialize_config_dir(config_dir=cli.CONF_DIR, version_base="1.3"):
            dcfg = hydra_compose(config_name="config", overrides=["train.epochs=1", "train.progress=false",
                                                                  "tracking.enabled=false", *overrides])
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(f"gpu-check: {str(err).strip().splitlines()[0]} (overrides as for mfexp.run)") from err
    return validate(cli.to_object(dcfg))


def train_once(cfg, data, ctx):
    """(net, FitResult) of one seeded training on `ctx`."""
    net = build_net(cfg, data, ctx)
    return net, fit(net, data, cfg.train, ctx)


def check_training(cfg, data, accel, host, label: str) -> Check:
    """`cfg` trained on `accel` twice and on `host` once, with the same seed."""
    _, first = train_once(cfg, data, accel)
    _, again = train_once(cfg, data, accel)  # also the warm one: its samples/s are reported
    _, on_host = train_once(cfg, data, host)
    gpu, cpu, rerun = first.final_test_rmse, on_host.final_test_rmse, again.final_test_rmse
    diff, repeat = abs(gpu - cpu), abs(gpu - rerun)
    ok = math.isfinite(gpu) and diff <= TOLERANCE and repeat <= SERVE_TOLERANCE
    speed = lambda r: f"{r.history[-1].samples_per_sec / 1000:.0f}k"  # noqa: E731
    return Check(f"train {cfg.model.name} {label}", ok,
                 f"test RMSE {accel} {gpu:.5f} {host} {cpu:.5f} diff {diff:.1e} (<= {TOLERANCE}), "
                 f"rerun diff {repeat:.1e}; samples/s {accel} {speed(again)} {host} {speed(on_host)}")


def check_population(cfg, data, accel, host) -> Check:
    """Four members of `cfg` (lr and reg spread x0.5..x2) trained as one population on `accel` and
    on `host`: each member's test RMSE on both within TOLERANCE (a member on the GPU agrees with the CPU)."""
    members = []
    for f in (0.5, 0.8, 1.25, 2.0):
        c = copy.deepcopy(cfg)
        c.train.lr, c.train.reg = cfg.train.lr * f, cfg.train.reg / f
        members.append(c)
    on_accel = fit_population([Member(c) for c in members], data, accel, final_test=True)
    on_host = fit_population([Member(c) for c in members], data, host, final_test=True)
    diffs = [abs(a.result.final_test_rmse - b.result.final_test_rmse) for a, b in zip(on_accel, on_host)]
    ok = all(math.isfinite(a.result.final_test_rmse) for a in on_accel) and max(diffs) <= TOLERANCE
    return Check(f"population {cfg.model.name}", ok,
                 f"4 members, test RMSE {accel} vs {host}: largest diff {max(diffs):.1e} (<= {TOLERANCE})")


def check_serving(cfg, data, device: str, store: Path) -> Check:
    """Train on `device` inside an MLflow run; load the logged model as a serving host without a GPU
    does (pyfunc, on the CPU) and also on `device` (model_io, the same code): their predictions on the
    test part must agree. The served test RMSE is shown beside the one measured at training (pyfunc
    input has no timestamps, so time-aware models may differ there by design)."""
    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
    cfg = replace(cfg, train=replace(cfg.train, device=device),
                  tracking=replace(cfg.tracking, enabled=True, uri=mlflow.get_tracking_uri(), log_model=True,
                                   experiment="gpu-check"))
    with contextlib.redirect_stdout(io.StringIO()):
        summary = run(cfg, data)
    run_id = summary["run_id"]
    tag = mlflow.get_run(run_id).data.tags.get("mfexp.device")
    users, items = data.user_ids[data.test.users].astype(np.int64), data.item_ids[data.test.items].astype(np.int64)
    served = np.asarray(mlflow.pyfunc.load_model(f"runs:/{run_id}/model").predict(
        pd.DataFrame({"user_id": users, "movie_id": items})), dtype=np.float32)
    local = Path(mlflow.artifacts.download_artifacts(f"runs:/{run_id}/model", dst_path=str(store / run_id)))
    ctx, name = resolve_device(device)
    on_device = model_io.predict_ids(model_io.load(next(local.rglob("meta.json")).parent, ctx=ctx), users, items,
                                     ctx=ctx)
    gap = float(np.max(np.abs(served - on_device)))
    requirement = _requirements()[0]
    named = requirement in (local / "requirements.txt").read_text().split()
    ok = gap <= SERVE_TOLERANCE and tag == name and named
    return Check(f"serve {cfg.model.name}", ok,
                 f"trained on {tag}; predictions served on cpu vs on {name}: max diff {gap:.1e}; test RMSE served "
                 f"{rmse(data.test.ratings, served):.5f}, at training {summary['test_rmse']:.5f}; requirements "
                 f"{'name' if named else 'LACK'} {requirement}")


def check_auto(overrides: Sequence[str], gpus: int, workdir: Path) -> Check:
    device = resolve_device("auto")[1]
    plan = build_plan([*overrides, "sweep=smoke", f"sweep.root={workdir / 'sweeps'}"])
    ok = device == "gpu:0" and plan.sweep.devices == list(range(gpus))
    return Check("auto", ok, f"train.device=auto -> {device}; sweep.devices=auto -> {workers_line(plan)}")


def check_two_gpu_sweep(overrides: Sequence[str], workdir: Path) -> Check:
    """A tiny sweep (2 models x 2 trials, one epoch) on gpu:0 and gpu:1; every trial on a GPU, both used."""
    uri = f"sqlite:///{workdir / 'sweep-mlflow.db'}"
    cmd = [sys.executable, "-m", "mfexp.sweep", *overrides, "sweep=smoke", "sweep.name=gpu-check",
           f"sweep.root={workdir / 'sweeps'}", "sweep.models=[plain,biased]", "sweep.n_trials=2",
           "sweep.devices=[0,1]", "train.epochs=1"]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir, timeout=900,
                          env={**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(REPO)})
    secs = time.perf_counter() - started
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        return Check("sweep on 2 GPUs", False, f"exit {proc.returncode} after {secs:.0f}s: {tail}")
    first = proc.stdout.splitlines()[0] if proc.stdout else ""
    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name("mfexp-sweep-gpu-check")
    runs = mlflow.search_runs([exp.experiment_id], output_format="list") if exp else []
    trials = [r.data.tags.get("mfexp.device") for r in runs
              if "optuna.trial_number" in r.data.tags and "mfexp.best" not in r.data.tags]
    ok = "2 worker(s) on gpu:0, gpu:1" in first and set(trials) == {"gpu:0", "gpu:1"}
    return Check("sweep on 2 GPUs", ok, f"{len(trials)} trials on {sorted(set(trials))} in {secs:.0f}s; "
                 f"first line: ...{first[-40:]}")


def run_checks(overrides: Sequence[str], gpus: int, say: Callable[[str], None] = print) -> list[Check]:
    base = compose(overrides)
    data = load_dataset(base.data)
    say(f"gpu-check: {gpus} GPU(s), mxnet {mx.__version__}, data {data.name} {data.split} "
        f"({len(data.train)} training ratings), models {', '.join(models())}")
    checks: list[Check] = []

    def attempt(name: str, fn: Callable[[], Check]) -> None:
        try:
            check = fn()
        except Exception as err:  # a check that crashes is a failed check; the others still run
            check = Check(name, False, f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:300]}")
        checks.append(check)
        say(check.line())

    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        for model in models():
            for label, extra in SETTINGS.items():
                cfg = compose([*overrides, f"model={model}", *extra])
                attempt(f"train {model} {label}", lambda: check_training(cfg, data, mx.gpu(0), mx.cpu(), label))
            cfg = compose([*overrides, f"model={model}"])
            attempt(f"serve {model}", lambda: check_serving(cfg, data, "gpu:0", Path(tmp)))
            sweep_cfg = compose([*overrides, f"model={model}", *SETTINGS["sweep"]])
            if supports(sweep_cfg):
                attempt(f"population {model}", lambda: check_population(sweep_cfg, data, mx.gpu(0), mx.cpu()))
        attempt("auto", lambda: check_auto(overrides, gpus, Path(tmp)))
        if gpus >= 2:
            attempt("sweep on 2 GPUs", lambda: check_two_gpu_sweep(overrides, Path(tmp)))
        else:
            say(f"skip  {'sweep on 2 GPUs':<22} one GPU visible")
    return checks


@friendly_errors
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    reason = no_gpu_reason()
    if reason is not None:
        print(reason, file=sys.stderr)
        return NO_GPU_EXIT


    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    cli.quiet_libraries()
    quiet_mxnet()
    checks = run_checks(args, visible_gpus())
    failed = [c.name for c in checks if not c.ok]
    print(f"gpu-check: {len(checks) - len(failed)} of {len(checks)} checks passed"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
