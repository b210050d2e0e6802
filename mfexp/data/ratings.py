"""The data containers every other module codes against: `Ratings` and `Dataset`.

numpy only. Ids are remapped to contiguous indices built from ALL ratings of a data set,
sorted by original id, so every test id exists in the index space.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from mfexp.data.features import SideFeatures

_DTYPES = {"users": np.int32, "items": np.int32, "ratings": np.float32, "timestamps": np.int64}


# eq=False: a generated __eq__/__hash__ over numpy arrays would be ambiguous/unhashable.
@dataclass(frozen=True, eq=False)
class Ratings:
    """One part of a data set (train, val or test), as parallel arrays."""

    users: np.ndarray  # int32, contiguous indices 0..n_users-1
    items: np.ndarray  # int32, contiguous indices 0..n_items-1
    ratings: np.ndarray  # float32
    timestamps: np.ndarray  # int64 (zeros when the source has none)

    def __post_init__(self) -> None:
        # Coerce to the documented dtypes so callers may pass any integer/float arrays.
        for name, dtype in _DTYPES.items():
            arr = np.ascontiguousarray(getattr(self, name), dtype=dtype)
            if arr.ndim != 1:
                raise ValueError(f"Ratings.{name} must be 1-D, got shape {arr.shape}")
            object.__setattr__(self, name, arr)
        n = len(self.users)
        if not (len(self.items) == len(self.ratings) == len(self.timestamps) == n):
            raise ValueError("Ratings arrays must have the same length: "
                             f"{[len(getattr(self, k)) for k in _DTYPES]}")

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def __repr__(self) -> str:
        return f"Ratings(n={len(self)})"

    def take(self, index: np.ndarray) -> "Ratings":
        """The ratings at positions `index` (an integer array), in that order."""
        return Ratings(self.users[index], self.items[index], self.ratings[index], self.timestamps[index])

    @staticmethod
    def empty() -> "Ratings":
        return Ratings(np.empty(0, np.int32), np.empty(0, np.int32), np.empty(0, np.float32),
                       np.empty(0, np.int64))


@dataclass(frozen=True, eq=False)
class Dataset:
    """A data set split into train / val / test, with its id tables."""

    name: str  # 'ml100k' or 'file'
    split: str  # 'u1'..'u5' for ml100k; 'random' for file
    train: Ratings  # training part minus the validation holdout
    val: Ratings  # validation holdout (len 0 when data.val_fraction == 0)
    test: Ratings
    n_users: int
    n_items: int
    user_ids: np.ndarray  # original id of each user index (int64)
    item_ids: np.ndarray  # original id of each item index (int64)
    rating_min: float
    rating_max: float
    item_titles: Optional[dict[int, str]]  # original item id -> title (ML-100K), else None
    user_side: Optional[SideFeatures] = None  # rows by user index (mfexp.data.features)
    item_side: Optional[SideFeatures] = None  # rows by item index

    @property
    def global_mean(self) -> float:
        """Mean rating of train (0.0 if train is empty)."""
        if len(self.train) == 0:
            return 0.0
        return float(np.mean(self.train.ratings, dtype=np.float64))

    def __repr__(self) -> str:
        return (f"Dataset(name={self.name!r}, split={self.split!r}, n_users={self.n_users}, "
                f"n_items={self.n_items}, train={len(self.train)}, val={len(self.val)}, "
                f"test={len(self.test)})")


def encode_ids(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Original ids -> (contiguous int32 indices, sorted unique original ids as int64).

    Works for huge sparse ids (e.g. 10**12): only the distinct ids are stored.
    """
    ids, index = np.unique(np.asarray(raw, dtype=np.int64), return_inverse=True)
    if len(ids) > np.iinfo(np.int32).max:
        raise ValueError(f"{len(ids)} distinct ids do not fit int32 indices")
    return index.astype(np.int32, copy=False).reshape(-1), ids


def last_of_duplicates(users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    """Positions to keep so each (user, item) pair appears once, keeping its LAST occurrence.

    `users`/`items` are contiguous indices. Returns sorted positions (original order kept).
    """
    key = users.astype(np.int64) * np.int64(max(n_items, 1)) + items.astype(np.int64)
    rev = key[::-1]
    _, first_in_rev = np.unique(rev, return_index=True)
    keep = (len(key) - 1) - first_in_rev
    keep.sort()
    return keep
