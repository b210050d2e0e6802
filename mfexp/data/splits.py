"""Splitting rules: GroupLens' ML-100K folds, a seeded random split, the validation holdout.

All functions return integer position arrays; seeded functions are deterministic per seed.
"""
from __future__ import annotations

import numpy as np

ML100K_FOLD_SIZE = 20000  # mku.sh: `head -$((i*20000)) u.data | tail -20000`
N_FOLDS = 5

# Distinct seed streams, so the test split and the holdout never share random draws.
_STREAM_TEST = 1
_STREAM_VAL = 2
_STREAM_FOLDS = 3


def fold_positions(n_lines: int, fold: int, fold_size: int = ML100K_FOLD_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """GroupLens' mku.sh fold rule, unsorted: (base positions, test positions) in file order.

    Fold `fold` (1..5) tests lines fold_size*(fold-1)+1 .. fold_size*fold (1-based) of u.data;
    the base is every other line (mku.sh: `head` of the lines before + `tail` of the lines after,
    which for 5*fold_size lines is exactly the rest).
    """
    if not 1 <= fold <= N_FOLDS:
        raise ValueError(f"fold must be 1..{N_FOLDS}, got {fold}")
    if n_lines != N_FOLDS * fold_size:
        raise ValueError(f"the fold rule needs exactly {N_FOLDS}*{fold_size} lines, got {n_lines}")
    lo, hi = fold_size * (fold - 1), fold_size * fold
    pos = np.arange(n_lines, dtype=np.int64)
    return np.concatenate([pos[:lo], pos[hi:]]), pos[lo:hi]


def mku_order(users: np.ndarray, items: np.ndarray, ratings: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """Permutation that sorts like `sort -t"<TAB>" -k 1,1n -k 2,2n` (GNU sort, C locale).

    Keys: user, then item, numerically. GNU sort (without -s) breaks remaining ties by comparing
    whole lines bytewise; for equal user and item that is "rating<TAB>timestamp", which equals
    numeric (rating, timestamp) order when ratings are one digit and timestamps have equal width,
    as in ML-100K. ML-100K has no such ties at all ((user, item) pairs are unique).
    """
    return np.lexsort((timestamps, ratings, items, users))


def random_split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random (train positions, test positions), each in ascending order."""
    n_test = int(round(n * test_fraction))
    perm = np.random.default_rng((seed, _STREAM_TEST)).permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def kfold_split(n: int, k: int, fold: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fold `fold` (1..k) of k seeded random folds: (train positions, test positions), ascending.

    One permutation per seed, cut into k parts as equal as can be: every rating is in exactly one
    fold's test part, and the other folds' training parts.
    """
    if not 1 <= fold <= k:
        raise ValueError(f"fold must be 1..{k}, got {fold}")
    perm = np.random.default_rng((seed, _STREAM_FOLDS)).permutation(n)
    parts = np.array_split(perm, k)
    train = np.concatenate([p for j, p in enumerate(parts) if j != fold - 1])
    return np.sort(train), np.sort(parts[fold - 1])


def holdout(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded validation holdout of a training part of length n: (train positions, val positions).

    Both keep the training part's order. val_fraction == 0 keeps everything in train; a positive
    fraction holds out at least one rating (when n >= 2), so a tiny data set still has a val part.
    """
    n_val = min(max(int(round(n * val_fraction)), 1), n - 1) if val_fraction > 0 and n >= 2 else 0
    if n_val == 0:
        return np.arange(n, dtype=np.int64), np.empty(0, dtype=np.int64)
    perm = np.random.default_rng((seed, _STREAM_VAL)).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])
