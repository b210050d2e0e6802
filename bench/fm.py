"""Section fm: training speed of the feature-aware models (issue 10). fm and svdpp samples/s on
ML-100K u1.base at batch 1024 and 4096 with each model's reference settings; fm's two ways to a
batch's feature rows side by side (layers.SparseBlock: all rows then gather, or the batch's
distinct rows only); one fm and one svdpp epoch on the 25M synthetic set (bench/synthetic.py:
implicit feedback from its ratings, and time), on random batches and on batches of whole users
(train.group_by=user), each with its peak RSS, in a fresh process.

    python -m bench.fm [--quick] [--budget S]
    python -m bench.fm --child N_RATINGS --batch B --budget S [--model M] [--group-by G]   (one synthetic epoch; JSON)

A synthetic epoch stops after `--budget` seconds of training (random batches: at most a minute) and
is extrapolated from the batches done (marked `extrapolated`), as the scaling section does.
"""
from __future__ import annotations

import argparse
import json
import time
from contextlib import contextmanager
from dataclasses import replace
from typing import Optional, Sequence

import mxnet as mx
import numpy as np

from bench import common, throughput
from bench.scaling import guard, one_epoch
from bench.synthetic import ML25M_ITEMS, ML25M_USERS, describe, ml25m_like_dataset
from mfexp.config import Config, TrainConfig
from mfexp.models import layers
from mfexp.models.plugins import model_class, named
from mfexp.train import build_net, epoch_order

SECTION = "fm"
MODELS = ("fm", "svdpp")
BATCH_SIZES = (1024, 4096)
TARGET_SAMPLES = 300_000  # fm at batch >= 1024
SYNTHETIC_RATINGS, QUICK_RATINGS = 25_000_000, 200_000
SYNTHETIC_BATCH = 4096
BUDGET_S = 300.0
UNGROUPED_BUDGET_S = 60.0  # random batches at 25M take hours an epoch: a minute of them is extrapolated
EPOCH_TARGET_S = 300.0  # one epoch at 25M (the lean-trial issue)
# the synthetic epochs: each model on random batches; svdpp also on batches of whole users (train.group_by=user:
# 0.009 of val RMSE on u1, BENCHMARKS.md AutoRec), which bound what its batch multiplies. fm's item side (each
# item's raters) stays as costly on batches of users (measured: 11,267 s an epoch), so fm runs once.
SYNTHETIC_RUNS = (("fm", "none"), ("svdpp", "none"), ("svdpp", "user"))


def reference_config(model: str, batch: int, epochs: int, sparse_grad: bool = False):
    """The model's reference settings (its class's `reference`: optimizer, lr, reg, k, ...) at
    another batch size: what a study of this model trains first."""
    settings = named(model)
    ref = model_class(settings._target_).reference(settings) or {}
    part = {p: {k.split(".", 1)[1]: v for k, v in ref.items() if k.startswith(p + ".")} for p in ("model", "train")}
    part["train"].update(batch_size=batch, epochs=epochs, progress=False, sparse_grad=sparse_grad)
    return Config(model=named(model, **part["model"]), train=TrainConfig(**part["train"]))


@contextmanager
def sparse_path(path: str):
    """Force SparseBlock's way to a batch's rows: "all" rows then gather, the batch's distinct
    "rows" only, or "auto" (its own rule)."""
    saved = layers.GATHER_RATIO
    layers.GATHER_RATIO = {"all": float("inf"), "rows": 0, "auto": saved}[path]
    try:
        yield
    finally:
        layers.GATHER_RATIO = saved


def measure_paths(data, batch_sizes: Sequence[int], epochs: int) -> list[dict]:
    """fm with each SparseBlock path forced, one after the other at each batch size (dense grads)."""
    rows = []
    for batch in batch_sizes:
        for path in ("all", "rows"):
            with sparse_path(path):
                (row,) = throughput.measure(data, ("fm",), (batch,), epochs, config=reference_config,
                                            sparse=(False,), section=f"{SECTION} {path:>4} rows")
            rows.append({**row, "path": path})
    return rows


def child(n_ratings: int, batch: int, budget_s: float, n_users: int = ML25M_USERS, n_items: int = ML25M_ITEMS,
          model: str = "fm", group_by: str = "none", group_size: int = 0) -> dict:
    """One epoch of `model` (reference settings, sparse grads, batches grouped by `group_by`) on
    `n_ratings` synthetic ML-25M-shaped ratings."""
    t = time.perf_counter()
    data = ml25m_like_dataset(n_ratings, n_users=n_users, n_items=n_items)
    gen_s = time.perf_counter() - t
    shape = describe(data.train.users, data.train.items, data.train.ratings)
    rss_data, peak_gen = common.rss_mb(), common.peak_rss_mb()
    common.reset_peak_rss()  # from here: what the model and training add to the data in memory
    cfg = reference_config(model, batch, 1, sparse_grad=True)
    cfg = replace(cfg, train=replace(cfg.train, group_by=group_by, group_size=group_size))
    t = time.perf_counter()
    net = build_net(cfg, data, mx.cpu())  # builds the implicit feedback blocks from the ratings
    build_s = time.perf_counter() - t
    blocks = ({side: getattr(net, side).features for side in ("_users", "_items")} if model == "fm"
              else {"_users": net._implicit})
    nnz = _distinct_row_nnz(data.train, blocks, batch, group_by, group_size)
    paths = {side.strip("_"): "batch rows" if b.batch_rows(mx.nd.array(nnz.pop("_first_" + side.strip("_"))))
             else "all rows" for side, b in blocks.items()}
    state: dict = {}
    with guard(budget_s, state, every=4):  # batches take seconds here: look at the clock often
        epoch_s, sps, extrapolated = one_epoch(net, data, cfg.train, n_ratings, state)
    return {"model": model, "group_by": group_by, "group_size": group_size, "ratings": n_ratings, "batch_size": batch, "k": cfg.model.k, "epoch_s": round(epoch_s, 1),
            "samples_per_sec": round(sps), "extrapolated": extrapolated,
            "measured_samples": state.get("samples", n_ratings), "measured_s": round(state.get("elapsed", epoch_s), 1),
            "generate_s": round(gen_s, 2), "build_s": round(build_s, 2), "paths": paths,
            "feature_nnz": {side.strip("_"): b.matrix.nnz for side, b in blocks.items()},
            "distinct_row_nnz_per_batch": nnz, "s_per_batch": round(batch / sps, 3),
            "rss_after_data_mb": rss_data, "peak_rss_generating_mb": peak_gen,
            "peak_rss_training_mb": common.peak_rss_mb(),
            "peak_rss_mb": max(v for v in (peak_gen, common.peak_rss_mb()) if v is not None), "shape": shape}


def _distinct_row_nnz(train, blocks: dict, batch: int, group_by: str, group_size: int, n_batches: int = 8) -> dict:
    """Mean entries in the feature rows of a batch's distinct users and items (the first batches of
    an epoch ordered as training orders it): what one batch multiplies, whichever path it takes.
    Also "_first_<side>": the first batch's row ids of that side."""
    order = epoch_order(train, group_by, np.random.default_rng(0), group_size)
    out = {}
    for side, ids in (("_users", train.users), ("_items", train.items)):
        if side not in blocks:
            continue
        lengths = np.diff(blocks[side].matrix.indptr)
        firsts = [ids[order[b * batch:(b + 1) * batch]] for b in range(n_batches)]
        out[side.strip("_")] = int(np.mean([lengths[np.unique(f)].sum() for f in firsts]))
        out["_first_" + side.strip("_")] = firsts[0]
    return out


def settings_line(model: str) -> str:
    cfg = reference_config(model, 0, 0)
    t, m = cfg.train, cfg.model
    return f"{model}: {t.optimizer}, lr {t.lr:g}, reg {t.reg:g}, k {m.k}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of the section")
    parser.add_argument("--out", help="result file (default bench/results/fm.json)")
    parser.add_argument("--child", type=int, metavar="N_RATINGS")
    parser.add_argument("--batch", type=int, default=SYNTHETIC_BATCH)
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds of synthetic training at most")
    parser.add_argument("--model", default="fm", choices=MODELS, help="the synthetic epoch's model (with --child)")
    parser.add_argument("--group-by", default="none", help="train.group_by of the synthetic epoch (with --child)")
    parser.add_argument("--group-size", type=int, default=0, help="train.group_size of the synthetic epoch (with --child)")
    args = parser.parse_args(argv)
    common.quiet_logs()
    if args.child:
        print(json.dumps(child(args.child, args.batch, args.budget, model=args.model, group_by=args.group_by,
                               group_size=args.group_size)))
        return 0
    started = time.perf_counter()
    load_before = common.machine()["load_avg"]
    data = throughput.u1_train_only(args.quick)
    epochs = 2 if args.quick else 3
    rows = throughput.measure(data, MODELS, BATCH_SIZES, epochs, config=reference_config, section=SECTION)
    paths = measure_paths(data, BATCH_SIZES, epochs)
    n = QUICK_RATINGS if args.quick else SYNTHETIC_RATINGS
    synthetic = []
    for model, group_by in SYNTHETIC_RUNS:
        budget = 3.0 if args.quick else (args.budget if group_by != "none" else min(args.budget, UNGROUPED_BUDGET_S))
        _, proc = common.run_child(["-m", "bench.fm", "--child", str(n), "--batch", str(args.batch), "--budget",
                                    str(budget), "--model", model, "--group-by", group_by])
        run = common.last_json_line(proc.stdout)
        synthetic.append(run)
        common.say(SECTION, f"{n:,} synthetic ratings, {model} group_by={group_by}: epoch {run['epoch_s']:,.0f}s"
                            f"{' (extrapolated)' if run['extrapolated'] else ''}, {run['samples_per_sec']:,} samples/s, "
                            f"peak RSS {run['peak_rss_mb']:,.0f} MiB")
    fm_large = [r["samples_per_sec"] for r in rows if r["model"] == "fm" and r["batch_size"] >= 1024]
    best = max(fm_large) if fm_large else None
    targets = [common.target("fm at batch >= 1024 (ML-100K, reference settings)", ">= 300,000 samples/s", best,
                             "samples/s", common.at_least(best, TARGET_SAMPLES))]
    for run in synthetic:
        at = f"{run['ratings']:,} ratings, group_by={run['group_by']}" + (", extrapolated" if run["extrapolated"] else "")
        targets += [
            common.target(f"one {run['model']} epoch, 25M synthetic ratings, batch {args.batch}, "
                          f"group_by={run['group_by']}", "<= 300 s", run["epoch_s"], "s",
                          common.at_most(run["epoch_s"], EPOCH_TARGET_S) if not args.quick else None,
                          f"{run['samples_per_sec']:,} samples/s; {at}"),
            common.target(f"peak RSS of that {run['model']} epoch", "<= 4,096 MiB", run["peak_rss_mb"], "MiB",
                          common.at_most(run["peak_rss_mb"], 4096) if not args.quick else None, at)]
    notes = [
        f"ML-100K: {len(data.train):,} ratings of u1.base; samples/s = the median of the epochs after the first, "
        "training only; each model's reference settings at each batch size ("
        + "; ".join(settings_line(m) for m in MODELS) + "); fm reads side features, implicit feedback and the day.",
        "Paths: layers.SparseBlock picks 'batch rows' when the batch's distinct rows hold under a quarter of "
        "a side's entries (ML-25M, or batches grouped by that side), else 'all rows' (ML-100K's random "
        "batches); here each is forced in turn (dense grads).",
        "Synthetic: bench/synthetic.py, no side features: fm reads implicit feedback (both sides, from its "
        "ratings) and the day (all timestamps are 0: one day); svdpp the user side's implicit feedback. "
        "Reference settings with train.sparse_grad=true (the feature weight tables' gradients stay dense) "
        "and train.group_by as shown; random batches (none) get a minute of training, extrapolated. "
        "peak RSS = VmHWM of the fresh process (data generation, feature blocks and training together).",
        f"1-minute load average: {load_before[0]:g} at the start, {common.machine()['load_avg'][0]:g} at the end "
        "(2 cores; other work on the machine slows every figure).",
    ]
    common.write_result(args.out or common.RESULTS / f"{SECTION}.json", SECTION, args.quick, started,
                        {"train_ratings": len(data.train), "epochs": epochs, "rows": rows, "paths": paths,
                         "synthetic": synthetic, "load_avg_start": load_before},
                        targets, notes)
    return 0


def _table(rows: list[dict], label) -> list[str]:
    batches = sorted({r["batch_size"] for r in rows})
    lines = ["| | " + " | ".join(f"batch {b}" for b in batches) + " |", "|---|" + "---:|" * len(batches)]
    for key in dict.fromkeys(label(r) for r in rows):
        cells = {r["batch_size"]: r["samples_per_sec"] for r in rows if label(r) == key}
        lines.append(f"| {key} | " + " | ".join(f"{cells.get(b, 0):,}" for b in batches) + " |")
    return lines


def render(result: dict) -> list[str]:
    f = result["figures"]
    runs = f["synthetic"] if isinstance(f["synthetic"], list) else [f["synthetic"]]  # one fm run before group_by
    lines = [f"Training samples/s on ML-100K ({f['train_ratings']:,} ratings of u1.base, {f['epochs'] + 2} epochs, "
             "median of the epochs after the first), each model's reference settings:", ""]
    lines += _table(f["rows"], lambda r: f"{r['model']} k={r['k']}" + (", sparse grads" if r["sparse_grad"] else ""))
    lines += ["", "fm's feature blocks, each way forced (dense grads):", ""]
    lines += _table(f["paths"], lambda r: {"all": "all rows, then gather", "rows": "the batch's distinct rows"}[r["path"]])
    lines += ["", f"One epoch (batch {runs[0]['batch_size']}) on synthetic ML-25M-shaped ratings, each in a fresh process:",
              "", "| model | train.group_by | ratings | epoch (s) | samples/s | s per batch | peak RSS (MiB) "
              "| feature blocks built (s) | paths (users / items) | entries in a batch's rows (users / items) |",
              "|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for s in runs:
        model, group_by = s.get("model", "fm"), s.get("group_by", "none")
        paths = " / ".join(s["paths"].get(side, "-") for side in ("users", "items"))
        nnz = " / ".join(f"{s['distinct_row_nnz_per_batch'][side]:,}" if side in s["distinct_row_nnz_per_batch"] else "-"
                         for side in ("users", "items"))
        lines.append(f"| {model} k={s['k']} | {group_by} | {s['ratings']:,} | {s['epoch_s']:,.0f}"
                     f"{'*' if s['extrapolated'] else ''} | {s['samples_per_sec']:,} | {s['s_per_batch']:g} | "
                     f"{s['peak_rss_mb']:,.0f} | {s['build_s']:.1f} | {paths} | {nnz} |")
    if any(s["extrapolated"] for s in runs):
        lines += ["", "\\* stopped after " + ", ".join(f"{s['measured_s']:.0f} s ({s['measured_samples']:,} ratings)"
                                                     for s in runs if s["extrapolated"])
                  + " of training and extrapolated from the batches done."]
    lines += ["", "Entries in a batch's rows: the feature entries of a batch's distinct users / items (mean of the "
              "epoch's first 8 batches), which an exact product multiplies forward and backward in every batch."]
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
