"""Section throughput: training samples/s of mfexp's `fit` per model and batch size (k=64, u1),
and where one batch's time goes at the tutorial's batch size.

    python -m bench.throughput [--quick]
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable, Optional, Sequence

import mxnet as mx
from mxnet import autograd
import numpy as np

from bench import common
from mfexp.config import Config, DataConfig, TrainConfig
from mfexp.data import load_dataset
from mfexp.models.plugins import named
from mfexp.train import _TrainStep, build_net, fit, make_trainer

SECTION = "throughput"
MODELS = ("plain", "mlp", "dropout", "biased")
BATCH_SIZES = (64, 256, 1024, 4096)
TARGET_SAMPLES = 1.3e6  # plain k=64, batch >= 1024


def u1_train_only(quick: bool):
    """ML-100K u1 as the tutorial trains on it: all of u1.base (no holdout). Quick: 16k of it."""
    data = load_dataset(DataConfig(val_fraction=0.0))
    if quick:
        keep = np.sort(np.random.default_rng(0).choice(len(data.train), 12_000, replace=False))
        data = replace(data, train=data.train.take(keep))
    return data


def train_config(model: str, batch_size: int, epochs: int, k: int = 64, sparse_grad: bool = False):
    """The tutorial's training settings (conf/train/tutorial.yaml) at another batch size;
    `sparse_grad`: row-sparse embedding gradients (train.sparse_grad, the sweeps' default)."""
    return Config(model=named(model, k=k), train=TrainConfig(batch_size=batch_size, epochs=epochs,
                                                                          progress=False, sparse_grad=sparse_grad))


def measure(data, models: Sequence[str] = MODELS, batch_sizes: Sequence[int] = BATCH_SIZES,
            epochs: int = 3, config: Callable = train_config, sparse: Sequence[bool] = (False, True),
            section: str = SECTION) -> list[dict]:
    """One row per (model, batch size, sparse grads): samples/s of each epoch, and the steady figure
    (median of the epochs after the first, whose time includes building the graph). Batches of 1024
    and more get two epochs more: their epochs are short. `config(model, batch, epochs, sparse_grad)`
    gives the Config (default: the tutorial's settings at k=64)."""
    rows = []
    for model, batch, sparse_grad in [(m, b, sp) for sp in sparse for m in models for b in batch_sizes]:
        cfg = config(model, batch, epochs + (2 if batch >= 1024 else 0), sparse_grad=sparse_grad)
        net = build_net(cfg, data, mx.cpu())
        history = fit(net, data, cfg.train, mx.cpu(), eval_test=False).history
        per_epoch = [h.samples_per_sec for h in history]
        steady = common.median(per_epoch[1:]) if len(per_epoch) > 1 else per_epoch[0]
        rows.append({"model": model, "batch_size": batch, "k": getattr(cfg.model, "k", None), "sparse_grad": sparse_grad,
                     "samples_per_sec": round(steady),
                     "per_epoch": [round(s) for s in per_epoch],
                     "epoch_time_s": round(history[-1].epoch_time_s, 4)})
        common.say(section, f"{model:>7} batch {batch:>4} {'sparse' if sparse_grad else 'dense '}: "
                            f"{steady:>10,.0f} samples/s")
    return rows


def batch_breakdown(data, batch: int = 64, n_batches: int = 200, reps: int = 3) -> dict[str, float]:
    """Microseconds per batch of fit's loop body, cumulatively: slice, + forward, + backward,
    + trainer.step, + the loss sum (the whole body). Best of `reps` (least disturbed by others)."""
    cfg = train_config("plain", batch, 1)
    ctx = mx.cpu()
    net = build_net(cfg, data, ctx)
    tr = data.train
    rows = mx.nd.array(np.stack([tr.users, tr.items, tr.ratings], axis=1).astype(np.float32), ctx=ctx)
    step = _TrainStep(net, cfg.train.reg, 3)
    step.hybridize(static_alloc=True, static_shape=True)
    trainer = make_trainer(net, cfg.train)
    n_batches = min(n_batches, len(tr) // batch)

    def loop(stage: int) -> float:
        pending = []
        mx.nd.waitall()
        start = time.perf_counter()
        for b in range(n_batches):
            x = rows[b * batch:(b + 1) * batch]
            if stage >= 1:
                with autograd.record():
                    loss, sse = step(x)
            if stage >= 2:
                loss.backward()
            if stage >= 3:
                trainer.step(batch)
            if stage >= 4:
                pending.append(sse)  # as fit keeps them, summed once per SYNC_EVERY batches
        mx.nd.waitall()
        return (time.perf_counter() - start) / n_batches * 1e6

    loop(4)  # warm-up: graph, memory, optimizer state
    stages = ("slice", "+ forward", "+ backward", "+ update (make_trainer's)", "+ keep the loss (whole body)")
    best = {s: min(loop(i) for _ in range(reps)) for i, s in enumerate(stages)}
    return {s: round(v, 1) for s, v in best.items()}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = common.section_args(__doc__.splitlines()[0], argv)
    common.quiet_logs()
    started = time.perf_counter()
    data = u1_train_only(args.quick)
    rows = measure(data, epochs=2 if args.quick else 3)
    breakdown = batch_breakdown(data, n_batches=60 if args.quick else 400)
    common.say(SECTION, f"batch 64 body, us/batch: {breakdown}")
    plain_large = [r["samples_per_sec"] for r in rows if r["model"] == "plain" and r["batch_size"] >= 1024]
    best = max(plain_large) if plain_large else None
    targets = [common.target("plain k=64 at batch >= 1024", ">= 1,300,000 samples/s", best, "samples/s",
                             common.at_least(best, TARGET_SAMPLES))]
    figures = {"train_ratings": len(data.train), "epochs": 2 if args.quick else 3, "rows": rows,
               "batch64_breakdown_us": breakdown}
    notes = ["samples/s: the median of the epochs after the first (the first builds the graph); "
             "training only (fit's own per-epoch figure, evaluation excluded); tutorial settings "
             "(sgd, lr 0.05, momentum 0.9, wd 1e-4) at each batch size; 'sparse grads' rows use "
             "train.sparse_grad=true (row-sparse embedding gradients, lazy updates: the sweeps' default)."]
    common.write_result(args.out or common.RESULTS / f"{SECTION}.json", SECTION, args.quick, started,
                        figures, targets, notes)
    return 0


def render(result: dict) -> list[str]:
    fig = result["figures"]
    rows = fig["rows"]
    batches = sorted({r["batch_size"] for r in rows})
    variants = list(dict.fromkeys((r["model"], r.get("sparse_grad", False)) for r in rows))
    lines = [f"Training samples/s (k=64, {fig['train_ratings']:,} ratings of u1.base, {fig['epochs']} epochs "
             f"({fig['epochs'] + 2} at batch >= 1024), median of the epochs after the first):", "",
             "| model | " + " | ".join(f"batch {b}" for b in batches) + " |",
             "|---|" + "---:|" * len(batches)]
    for m, sparse in variants:
        cells = {r["batch_size"]: r["samples_per_sec"] for r in rows
                 if r["model"] == m and r.get("sparse_grad", False) == sparse}
        label = f"{m}, sparse grads" if sparse else m
        lines.append(f"| {label} | " + " | ".join(f"{cells.get(b, 0):,}" for b in batches) + " |")
    bd = fig.get("batch64_breakdown_us")
    if bd:
        lines += ["", "Where one batch of 64 goes (plain k=64, microseconds per batch, cumulative, best of 3):", "",
                  "| loop body up to | us/batch |", "|---|---:|"]
        lines += [f"| {k} | {v:,.0f} |" for k, v in bd.items()]
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
