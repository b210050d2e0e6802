"""`load_dataset(cfg)`: a DataConfig in, a split, id-mapped `Dataset` out."""
from __future__ import annotations

import warnings
from typing import Optional

import numpy as np

from mfexp.config import ML100K_SPLITS, DataConfig
from mfexp.errors import ConfigError, DataError
from mfexp.data.movielens import load_ml100k, parse_udata
from mfexp.data.ratings import Dataset, Ratings, encode_ids, last_of_duplicates
from mfexp.data.splits import fold_positions, holdout, mku_order, random_split
from mfexp.data.textfile import read_ratings_file


def load_dataset(cfg: DataConfig) -> Dataset:
    """The data set `cfg` names, split into train / val / test (see DataConfig)."""
    return load_with_origin(cfg)[0]


def load_with_origin(cfg: DataConfig) -> tuple[Dataset, str]:
    """(Dataset, where the data came from) — the origin is for messages such as `info`."""
    if not 0.0 <= cfg.val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be in [0, 1), got {cfg.val_fraction!r}.")
    if cfg.name == "ml100k":
        return _ml100k(cfg)
    if cfg.name == "file":
        return _file(cfg)
    raise ConfigError(f"data.name must be ml100k or file, got {cfg.name!r}.")


def _build(name: str, split: str, users: tuple[np.ndarray, np.ndarray], items: tuple[np.ndarray, np.ndarray],
           ratings: np.ndarray, timestamps: np.ndarray, train_pos: np.ndarray, test_pos: np.ndarray,
           cfg: DataConfig, titles: Optional[dict[int, str]]) -> Dataset:
    """Cut train (minus the holdout), val and test; `users`/`items` are encode_ids() of ALL ratings."""
    (uidx, user_ids), (iidx, item_ids) = users, items
    everything = Ratings(uidx, iidx, ratings, timestamps)
    keep, val = holdout(len(train_pos), cfg.val_fraction, cfg.seed)
    return Dataset(
        name=name, split=split,
        train=everything.take(train_pos[keep]), val=everything.take(train_pos[val]),
        test=everything.take(test_pos),
        n_users=len(user_ids), n_items=len(item_ids), user_ids=user_ids, item_ids=item_ids,
        rating_min=float(ratings.min()), rating_max=float(ratings.max()), item_titles=titles,
    )


def _ml100k(cfg: DataConfig) -> tuple[Dataset, str]:
    if cfg.split not in ML100K_SPLITS:
        raise ConfigError(f"data.split must be one of {', '.join(ML100K_SPLITS)} for ml100k, "
                          f"got {cfg.split!r}.")
    ml = load_ml100k(cfg.path, cfg.cache_dir, cfg.download)
    u, i, r, t = parse_udata(ml.udata)
    base, test = fold_positions(len(u), int(cfg.split[1:]))
    base = base[mku_order(u[base], i[base], r[base], t[base])]  # the order of GroupLens' uN.base
    test = test[mku_order(u[test], i[test], r[test], t[test])]
    ds = _build("ml100k", cfg.split, encode_ids(u), encode_ids(i), r, t, base, test, cfg, ml.titles)
    return ds, ml.origin


def _file(cfg: DataConfig) -> tuple[Dataset, str]:
    if not cfg.path:
        raise ConfigError("data.path must name a ratings file when data=file, got None.")
    if not 0.0 < cfg.test_fraction < 1.0:
        raise ConfigError(f"data.test_fraction must be in (0, 1), got {cfg.test_fraction!r}.")
    raw = read_ratings_file(cfg.path)
    u, i, r, t = raw
    uidx, user_ids = encode_ids(u)
    iidx, item_ids = encode_ids(i)
    keep = last_of_duplicates(uidx, iidx, len(item_ids))
    if len(keep) < len(u):  # every pair keeps one rating, so the id tables stay complete
        warnings.warn(f"{cfg.path}: {len(u) - len(keep)} duplicate (user, item) ratings; kept the last "
                      f"rating of each pair.", UserWarning, stacklevel=3)
        uidx, iidx, r, t = uidx[keep], iidx[keep], r[keep], t[keep]
    train, test = random_split(len(r), cfg.test_fraction, cfg.seed)
    if len(train) == 0 or len(test) == 0:
        raise DataError(f"{cfg.path} holds only {len(r)} distinct ratings: too few for a train/test split "
                        f"with data.test_fraction={cfg.test_fraction}. Use a larger file.")
    return (_build("file", "random", (uidx, user_ids), (iidx, item_ids), r, t, train, test, cfg, None),
            str(cfg.path))
