"""Section lean: one trial's training samples/s, this tree against an earlier commit, side by side.

    python -m bench.lean [--quick] [--base COMMIT]

The base commit (default: the one before the lean step landed) is checked out in a temporary git
worktree; the same child script trains the same configurations there and here, alternating, each
run a fresh process with mfexp imported from its own tree. Configurations: every model at its
reference configuration (the first trial of each default-sweep study), and plain MF at batch 64 in
the tutorial's regime (SGD, momentum, dense wd) and the sweeps' (Adam, row-sparse gradients).
Figures: samples/s (fit's own, the median of the epochs after the first) and the last epoch's val
RMSE, which must not change.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import mxnet as mx

from bench import common
import mfexp
from mfexp.config import Config, DataConfig, TrainConfig
from mfexp.data import load_dataset
from mfexp.models.plugins import model_class, named
from mfexp.train import build_net, fit

SECTION = "lean"
BASE = "481ff21"  # the commit before the lean step (FusedUpdate, one host sum per SYNC_EVERY batches)
MODELS = ("plain", "mlp", "dropout", "biased", "svdpp", "fm", "autorec")
# (label, model, train overrides on top of the reference): plain at batch 64, both regimes
EXTRA = (("plain, batch 64, adam, sparse grads", "plain",
          {"optimizer": "adam", "lr": 1e-3, "wd": 0.0, "sparse_grad": True, "batch_size": 64}),)
ROOT = Path(__file__).resolve().parents[1]


def _configs(quick: bool) -> list[tuple[str, str, dict]]:
    models = ("plain", "biased", "fm") if quick else MODELS
    return [(f"{m} (reference)", m, {}) for m in models] + list(EXTRA)


def child(label: str, model: str, overrides: dict, epochs: int) -> dict:
    """Train one configuration for `epochs` epochs in this process; mfexp is whichever tree is first
    on sys.path."""
    settings = named(model)
    ref = model_class(settings._target_).reference(settings) or {}
    train = {k[len("train."):]: v for k, v in ref.items() if k.startswith("train.")}
    model_args = {k[len("model."):]: v for k, v in ref.items() if k.startswith("model.")}
    train.update(overrides, epochs=epochs, progress=False, patience=None, swa=1)
    cfg = Config(model=named(model, **model_args), train=TrainConfig(**train))
    data = load_dataset(DataConfig())
    net = build_net(cfg, data, mx.cpu())
    history = fit(net, data, cfg.train, mx.cpu(), eval_test=False, final_test=False).history
    return {"label": label, "model": model, "tree": str(Path(mfexp.__file__).parents[1]),
            "batch_size": cfg.train.batch_size, "optimizer": cfg.train.optimizer,
            "sparse_grad": cfg.train.sparse_grad,
            "samples_per_sec": statistics.median(e.samples_per_sec for e in history[1:]),
            "val_rmse": history[-1].val_rmse}


def _run_child(tree: Path, config: tuple, epochs: int) -> dict:
    label, model, overrides = config
    env = {**os.environ, "PYTHONPATH": str(tree)}
    code = ("import json, sys; from importlib.util import spec_from_file_location, module_from_spec; "
            f"s = spec_from_file_location('lean', {str(Path(__file__))!r}); m = module_from_spec(s); "
            "s.loader.exec_module(m); "
            f"print('RESULT ' + json.dumps(m.child({label!r}, {model!r}, {overrides!r}, {epochs})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tempfile.gettempdir(), env=env, capture_output=True,
                         text=True, timeout=1800)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{label} in {tree} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    if Path(result["tree"]).resolve() != tree.resolve():
        raise RuntimeError(f"the child imported mfexp from {result['tree']}, not {tree}")
    return result


def measure(base: str, quick: bool, rounds: int) -> list[dict]:
    epochs = 2 if quick else 3
    folder = Path(tempfile.mkdtemp(prefix="mfexp-lean-"))
    worktree = folder / "base"
    subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(worktree), base], cwd=ROOT, check=True)
    rows = []
    try:
        for config in _configs(quick):
            runs = {"before": [], "after": []}
            for _ in range(rounds):  # alternating, so that load on the machine falls on both
                for side, tree in (("before", worktree), ("after", ROOT)):
                    runs[side].append(_run_child(tree, config, epochs))
            before = statistics.median(r["samples_per_sec"] for r in runs["before"])
            after = statistics.median(r["samples_per_sec"] for r in runs["after"])
            row = {"label": config[0], "model": config[1], "batch_size": runs["after"][0]["batch_size"],
                   "optimizer": runs["after"][0]["optimizer"], "sparse_grad": runs["after"][0]["sparse_grad"],
                   "before": round(before), "after": round(after), "speedup": round(after / before, 2),
                   "val_before": runs["before"][0]["val_rmse"], "val_after": runs["after"][0]["val_rmse"]}
            common.say(SECTION, f"{row['label']}: {row['before']:,} -> {row['after']:,} samples/s "
                                f"({row['speedup']}x), val {row['val_before']:.5f} -> {row['val_after']:.5f}")
            rows.append(row)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT, capture_output=True)
        subprocess.run(["rm", "-rf", str(folder)])
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="three models, two epochs, one round")
    parser.add_argument("--out", type=Path, help="result file (default bench/results/lean.json)")
    parser.add_argument("--base", default=BASE, help=f"the commit to compare with (default {BASE})")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows = measure(args.base, args.quick, rounds=1 if args.quick else 2)
    plain64 = [r["speedup"] for r in rows if r["model"] == "plain" and r["batch_size"] == 64]
    refs = {r["model"]: r["speedup"] for r in rows if r["label"].endswith("(reference)")}
    worst = min(refs.values()) if refs else None
    worse = [r["label"] for r in rows if r["val_after"] - r["val_before"] > 1e-4]
    changed = [r["label"] for r in rows if abs(r["val_after"] - r["val_before"]) > 1e-4]
    targets = [
        common.target("plain k=64 at batch 64, every regime measured", ">= 2x samples/s", min(plain64, default=None),
                      "x", common.at_least(min(plain64, default=None), 2.0)),
        common.target("every model at its reference configuration", ">= 1.5x samples/s", worst, "x",
                      common.at_least(worst, 1.5), note=f"worst: {min(refs, key=refs.get) if refs else '-'}"),
        common.target("val RMSE unchanged or better (within 1e-4)", "0 configurations worse", float(len(worse)),
                      "configurations", not worse, note="changed: " + (", ".join(changed) or "none")),
    ]
    notes = [f"before: commit {args.base} in a git worktree; after: this tree; each figure the median of "
             f"{1 if args.quick else 2} fresh processes per side, run alternately; samples/s is fit's own "
             "(training only), the median of the epochs after the first.",
             "A model whose reference configuration changed since the base trains that configuration on each side "
             "(autorec: train.group_by=item, batches of whole items), so its val RMSE may differ."]
    common.write_result(args.out or common.RESULTS / f"{SECTION}.json", SECTION, args.quick, started,
                        {"base": args.base, "rows": rows}, targets, notes)
    return 0


def render(result: dict) -> list[str]:
    fig = result["figures"]
    lines = [f"Training samples/s of one trial, commit {fig['base']} (before) against this tree (after):", "",
             "| configuration | batch | optimizer | before | after | speedup | val before | val after |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in fig["rows"]:
        opt = r["optimizer"] + (", sparse" if r["sparse_grad"] else "")
        lines.append(f"| {r['label']} | {r['batch_size']} | {opt} | {r['before']:,} | {r['after']:,} | "
                     f"{r['speedup']:.2f}x | {r['val_before']:.5f} | {r['val_after']:.5f} |")
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
