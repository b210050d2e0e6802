"""Section tutorial: the tutorial's own code (bench/tutorial.py) against mfexp at the tutorial's
settings (plain, k 64, batch 64, sgd lr 0.05 momentum 0.9 wd 1e-4, all of u1.base), side by side
in one invocation: training samples/s, and end-to-end wall time of each script for its epochs.

    python -m bench.tutorial_compare [--quick]
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Optional, Sequence

from mlflow import MlflowClient

from bench import common

SECTION = "tutorial"
TUTORIAL = Path(__file__).with_name("tutorial.py")


def export_u1() -> Path:
    folder = common.scratch() / "ml100k-u1"
    if not (folder / "u1.base").exists():
        common.run_child(["-m", "mfexp.data", "export", "data.split=u1", f"out={folder}"])
    return folder


def run_tutorial(data_dir: Path, epochs: int) -> dict:
    out = common.scratch() / "tutorial.json"
    wall, _ = common.run_child([str(TUTORIAL), "--data-dir", str(data_dir), "--epochs", str(epochs), "--json", str(out)])
    figures = json.loads(out.read_text())
    spe = [figures["samples_per_epoch"] / t for t in figures["epoch_times_s"]]
    return {"wall_s": round(wall, 3), "samples_per_sec": round(common.median(spe)),
            "per_epoch": [round(s) for s in spe], "final_val_rmse": figures["final_val_rmse"],
            "speedometer_mean": figures["speedometer_mean"], "api": figures["api"]}


def run_mfexp(epochs: int, uri: str) -> dict:
    """`python -m mfexp.run model=plain data.val_fraction=0` as a user runs it, tracking included
    (into a ready store); its per-epoch samples/s read back from the MLflow run it made."""
    wall, proc = common.run_child(
        ["-m", "mfexp.run", "model=plain", "data.val_fraction=0", f"train.epochs={epochs}", "train.progress=false"],
        env=common.child_env(MLFLOW_TRACKING_URI=uri), cwd=common.scratch())
    match = re.search(r"MLflow run (\w+) in", proc.stdout + proc.stderr)
    row = {"wall_s": round(wall, 3), "samples_per_sec": None, "per_epoch": [], "test_rmse": None}
    test = re.search(r"test_rmse=([\d.]+)", proc.stdout)
    row["test_rmse"] = float(test.group(1)) if test else None
    if match:
        history = MlflowClient(uri).get_metric_history(match.group(1), "samples_per_sec")
        spe = [m.value for m in sorted(history, key=lambda m: m.step)]
        row["per_epoch"] = [round(s) for s in spe]
        row["samples_per_sec"] = round(common.median(spe)) if spe else None
    return row


def startup_costs(epochs: int) -> dict:
    """What mfexp.run pays before and after training that the tutorial's script does not."""
    imports = "import mxnet, mlflow, pandas, hydra, mfexp.run, mfexp.track.tracker, mfexp.models.io, " \
              "mlflow.store.tracking.sqlalchemy_store"
    out = {"import_mxnet_s": round(common.run_child(["-c", "import mxnet"])[0], 2),
           "import_mfexp_run_s": round(common.run_child(["-c", imports])[0], 2)}
    wall, _ = common.run_child(["-m", "mfexp.run", "model=plain", "data.val_fraction=0", f"train.epochs={epochs}",
                                "train.progress=false", "tracking.enabled=false"])
    out["mfexp_run_untracked_s"] = round(wall, 2)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = common.section_args(__doc__.splitlines()[0], argv)
    common.quiet_logs()
    started = time.perf_counter()
    epochs, rounds = (1, 1) if args.quick else (10, 2)
    data_dir = export_u1()
    uri = common.mlflow_store(SECTION)
    tut, mf = [], []
    for r in range(rounds):  # alternate, so a disturbance hits both sides alike
        tut.append(run_tutorial(data_dir, epochs))
        common.say(SECTION, f"round {r + 1}: tutorial {tut[-1]['samples_per_sec']:,} samples/s, "
                            f"{tut[-1]['wall_s']:.1f}s end to end")
        mf.append(run_mfexp(epochs, uri))
        common.say(SECTION, f"round {r + 1}: mfexp    {mf[-1]['samples_per_sec'] or 0:,} samples/s, "
                            f"{mf[-1]['wall_s']:.1f}s end to end")
    startup = {} if args.quick else startup_costs(epochs)
    t_sps, m_sps = common.median([t["samples_per_sec"] for t in tut]), common.median([m["samples_per_sec"] for m in mf])
    t_wall, m_wall = common.median([t["wall_s"] for t in tut]), common.median([m["wall_s"] for m in mf])
    sps_ratio = round(m_sps / t_sps, 3) if t_sps and m_sps else None
    wall_ratio = round(t_wall / m_wall, 3) if t_wall and m_wall else None
    targets = [
        common.target("samples/s vs the tutorial's code (plain, k 64, batch 64)", ">= 2x", sps_ratio, "x",
                      common.at_least(sps_ratio, 2.0), f"mfexp {m_sps:,.0f} vs tutorial {t_sps:,.0f} samples/s"),
        common.target(f"end to end, {epochs} epochs: tutorial script time / mfexp.run time", ">= 1.5x", wall_ratio,
                      "x", common.at_least(wall_ratio, 1.5), f"tutorial {t_wall:.1f}s vs mfexp.run {m_wall:.1f}s"),
    ]
    figures = {"epochs": epochs, "rounds": rounds, "tutorial": tut, "mfexp": mf,
               "tutorial_samples_per_sec": t_sps, "mfexp_samples_per_sec": m_sps,
               "tutorial_wall_s": t_wall, "mfexp_wall_s": m_wall, "samples_ratio": sps_ratio,
               "wall_ratio": wall_ratio, "tutorial_api": tut[0]["api"], "startup": startup}
    notes = [f"Both sides train on all 80,000 ratings of u1.base for {epochs} epoch(s) and evaluate on "
             "u1.test; each runs as its own process, alternating, medians over the rounds.",
             "Tutorial: bench/tutorial.py, the tutorial's DataIter + mx.model.FeedForward (deprecated in "
             "MXNet 1.9.1 but working) ported to Python 3, ctx mx.cpu(); samples/s = 80,000 / its logged "
             "'Time cost' per epoch (training only).",
             "mfexp: `python -m mfexp.run model=plain data.val_fraction=0 train.epochs=N "
             "train.progress=false`, MLflow tracking and model logging included, into an already "
             "migrated sqlite store (a new store spends seconds on migrations once, on a user's first "
             "run only); samples/s = fit's per-epoch figure read back from the run."]
    common.write_result(args.out or common.RESULTS / f"{SECTION}.json", SECTION, args.quick, started,
                        figures, targets, notes)
    return 0


def render(result: dict) -> list[str]:
    f = result["figures"]
    return [f"{f['epochs']} epoch(s), {f['rounds']} alternating round(s), medians:", "",
            "| | tutorial code | mfexp | ratio |", "|---|---:|---:|---:|",
            f"| training samples/s, batch 64 | {f['tutorial_samples_per_sec']:,.0f} | "
            f"{f['mfexp_samples_per_sec'] or 0:,.0f} | {f['samples_ratio']}x |",
            f"| end-to-end wall time (s) | {f['tutorial_wall_s']:.1f} | {f['mfexp_wall_s']:.1f} | "
            f"{f['wall_ratio']}x faster |",
            f"| final RMSE on u1.test (mfexp clips predictions to the rating scale) | {f['tutorial'][-1]['final_val_rmse']} | {f['mfexp'][-1]['test_rmse']} | |"] + (
        ["", "Fixed costs (one process each, seconds): "
             f"`import mxnet` {f['startup']['import_mxnet_s']}; mfexp.run's imports (mxnet, mlflow, pandas, hydra, "
             f"sqlalchemy store) {f['startup']['import_mfexp_run_s']}; the same mfexp.run with "
             f"tracking.enabled=false {f['startup']['mfexp_run_untracked_s']} end to end."] if f.get("startup") else [])


if __name__ == "__main__":
    raise SystemExit(main())
