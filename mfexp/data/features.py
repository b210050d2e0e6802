"""Features beyond (user, item, rating): side features of users and items, and implicit feedback.

numpy only; models turn these into their own tensors. Rows are indexed by the Dataset's
contiguous user / item indices. Implicit feedback is built from the training part only
(`data.train`: never the validation holdout, never the test part), so no evaluated pair leaks
into what a model sees.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass(frozen=True, eq=False)
class Csr:
    """A compressed-sparse-row matrix: row r holds columns indices[indptr[r]:indptr[r+1]]
    with values values[indptr[r]:indptr[r+1]]."""

    indptr: np.ndarray  # int64, n_rows + 1
    indices: np.ndarray  # int32 column indices
    values: np.ndarray  # float32
    n_cols: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "indptr", np.ascontiguousarray(self.indptr, dtype=np.int64))
        object.__setattr__(self, "indices", np.ascontiguousarray(self.indices, dtype=np.int32))
        object.__setattr__(self, "values", np.ascontiguousarray(self.values, dtype=np.float32))
        if len(self.indices) != len(self.values) or self.indptr[-1] != len(self.indices):
            raise ValueError("Csr: indptr, indices and values do not agree")

    @property
    def n_rows(self) -> int:
        return len(self.indptr) - 1

    @property
    def nnz(self) -> int:
        return len(self.indices)

    @staticmethod
    def from_coo(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n_rows: int, n_cols: int) -> "Csr":
        """Entries (rows[k], cols[k], values[k]); duplicates are kept (they add up in products)."""
        order = np.lexsort((cols, rows))
        counts = np.bincount(np.asarray(rows, dtype=np.int64), minlength=n_rows)
        indptr = np.concatenate([[0], np.cumsum(counts)])
        return Csr(indptr, np.asarray(cols)[order], np.asarray(values)[order], n_cols)

    def take_rows(self, rows: np.ndarray) -> "Csr":
        """The rows `rows` in that order; -1 gives an all-zero row."""
        rows = np.asarray(rows, dtype=np.int64)
        present = rows >= 0
        lengths = np.zeros(len(rows), dtype=np.int64)
        lengths[present] = np.diff(self.indptr)[rows[present]]
        first = np.zeros(len(rows), dtype=np.int64)
        first[present] = self.indptr[rows[present]]
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        starts = np.repeat(first, lengths)
        within = np.arange(indptr[-1]) - np.repeat(indptr[:-1], lengths)
        pos = starts + within
        return Csr(indptr, self.indices[pos], self.values[pos], self.n_cols)

    def to_dense(self) -> np.ndarray:
        out = np.zeros((self.n_rows, self.n_cols), dtype=np.float32)
        rows = np.repeat(np.arange(self.n_rows), np.diff(self.indptr))
        np.add.at(out, (rows, self.indices), self.values)
        return out

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """Plain arrays for np.savez (nothing pickled)."""
        return {f"{prefix}indptr": self.indptr, f"{prefix}indices": self.indices,
                f"{prefix}values": self.values, f"{prefix}shape": np.array([self.n_rows, self.n_cols])}

    @staticmethod
    def from_arrays(arrays, prefix: str) -> Optional["Csr"]:
        if f"{prefix}indptr" not in arrays:
            return None
        return Csr(arrays[f"{prefix}indptr"], arrays[f"{prefix}indices"], arrays[f"{prefix}values"],
                   int(arrays[f"{prefix}shape"][1]))


@dataclass(frozen=True, eq=False)
class SideFeatures:
    """One entity's side features: column names and an (entities x features) matrix.
    Categorical columns are one-hot (1.0); multi-valued ones (genres) are 1/sqrt(count) each,
    so every row's block has the same weight whatever its number of values."""

    names: tuple[str, ...]
    matrix: Csr

    def __post_init__(self) -> None:
        if len(self.names) != self.matrix.n_cols:
            raise ValueError("SideFeatures: one name per column")

    @property
    def n_features(self) -> int:
        return self.matrix.n_cols

    def for_ids(self, table_ids: np.ndarray, ids: np.ndarray) -> "SideFeatures":
        """Rows reordered for `ids` (e.g. a Dataset's user_ids), when row r of this table belongs to
        original id table_ids[r]; an id the table lacks gets an all-zero row."""
        table_ids = np.asarray(table_ids, dtype=np.int64)
        ids = np.asarray(ids, dtype=np.int64)
        rows = np.full(len(ids), -1, dtype=np.int64)
        if len(table_ids):
            order = np.argsort(table_ids, kind="stable")
            at = np.minimum(np.searchsorted(table_ids[order], ids), len(order) - 1)
            rows = np.where(table_ids[order][at] == ids, order[at], -1)
        return SideFeatures(self.names, self.matrix.take_rows(rows))

    def summary(self) -> str:
        """Column groups with their sizes, e.g. `age (7), gender (2)`: a name's group is its part
        before '=' (one-hot blocks); a name without '=' is its own group."""
        groups: dict[str, int] = {}
        for name in self.names:
            key = name.partition("=")[0]
            groups[key] = groups.get(key, 0) + 1
        return ", ".join(k if n == 1 and k in self.names else f"{k} ({n})" for k, n in groups.items())


def implicit_feedback(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> tuple[Csr, Csr]:
    """(user x item, item x user) matrices of who rated what, each row scaled by 1/sqrt(its count),
    as SVD++ and FMs with implicit feedback use them. Pass the TRAINING part's users and items only."""
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    out = []
    for rows, cols, n_rows, n_cols in ((users, items, n_users, n_items), (items, users, n_items, n_users)):
        count = np.bincount(rows, minlength=n_rows).astype(np.float32)
        scale = 1.0 / np.sqrt(np.maximum(count, 1.0))
        out.append(Csr.from_coo(rows, cols, scale[rows], n_rows, n_cols))
    return out[0], out[1]
