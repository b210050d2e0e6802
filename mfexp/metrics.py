"""Metrics, pure numpy: rating prediction (RMSE, exact over every rating) and top-N ranking
quality (precision, recall, NDCG at k, catalogue coverage) from any all-items scorer."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np


def sse(label: np.ndarray, pred: np.ndarray) -> float:
    """Sum of squared errors, accumulated in float64."""
    diff = np.asarray(pred, dtype=np.float64).ravel() - np.asarray(label, dtype=np.float64).ravel()
    return float(np.dot(diff, diff))


def rmse(label: np.ndarray, pred: np.ndarray) -> float:
    """Root-mean-square error over every pair (the tutorial averaged per-batch RMSEs instead)."""
    label = np.asarray(label)
    if label.size == 0:
        raise ValueError("rmse of an empty set is undefined")
    if np.asarray(pred).size != label.size:
        raise ValueError(f"rmse: {label.size} labels but {np.asarray(pred).size} predictions")
    return float(np.sqrt(sse(label, pred) / label.size))


# --- top-N ranking quality ------------------------------------------------------------------------
@dataclass
class RankingQuality:
    """Top-k quality averaged over the users with at least one relevant held-out item."""

    k: int
    precision: float  # hits / k
    recall: float  # hits / the user's relevant items
    ndcg: float  # binary relevance, log2 discount, ideal = all relevant items first
    coverage: Optional[float]  # distinct items in every user's top k / n_items (None: not computed)
    users: int  # users evaluated

    def as_metrics(self, prefix: str) -> dict[str, float]:
        """e.g. test_precision_at_10, test_recall_at_10, test_ndcg_at_10, test_coverage_at_10."""
        names = {"precision": self.precision, "recall": self.recall, "ndcg": self.ndcg, "coverage": self.coverage}
        return {f"{prefix}_{n}_at_{self.k}": float(v) for n, v in names.items() if v is not None}


def _by_user(users: np.ndarray, items: np.ndarray, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """(indptr, items sorted by user): row u is items[indptr[u]:indptr[u + 1]]."""
    order = np.argsort(users, kind="stable")
    indptr = np.searchsorted(np.asarray(users)[order], np.arange(n_users + 1))
    return indptr, np.asarray(items)[order]


def top_k(scores: np.ndarray, k: int, exclude: np.ndarray) -> np.ndarray:
    """The k best-scored item indices, best first (ties: lower index first), `exclude` left out."""
    scores = np.array(scores, dtype=np.float64)
    scores[exclude] = -np.inf
    k = min(k, int(np.isfinite(scores).sum()))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    cand = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    return cand[np.lexsort((cand, -scores[cand]))]


def ranking_quality(scores_for: Callable[[int], np.ndarray], n_users: int, n_items: int,
                    seen: tuple[np.ndarray, np.ndarray], relevant: tuple[np.ndarray, np.ndarray],
                    k: int = 10, coverage: bool = True) -> RankingQuality:
    """Precision, recall and NDCG at k of the ranking `scores_for(user)` gives (all items' scores of
    one user index), over the users with a relevant held-out item; items the user already rated
    (`seen`, (users, items) index arrays) are neither ranked nor counted. `relevant` holds the
    held-out (user, item) pairs that count as hits (e.g. rated >= 4: see `liked`). With
    `coverage`, every user's top k is computed to measure catalogue coverage."""
    seen_ptr, seen_items = _by_user(*seen, n_users)
    rel_ptr, rel_items = _by_user(*relevant, n_users)
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    precision, recall, ndcg, shown = [], [], [], set()
    for u in range(n_users):
        rated = seen_items[seen_ptr[u]:seen_ptr[u + 1]]
        rel = np.setdiff1d(rel_items[rel_ptr[u]:rel_ptr[u + 1]], rated)
        if not len(rel) and not coverage:
            continue
        top = top_k(scores_for(u), k, rated)
        shown.update(top.tolist())
        if not len(rel):
            continue
        hit = np.isin(top, rel)
        precision.append(hit.sum() / k)
        recall.append(hit.sum() / len(rel))
        ndcg.append(float(discount[:len(top)][hit].sum() / discount[:min(k, len(rel))].sum()))
    mean = lambda xs: float(np.mean(xs)) if xs else 0.0  # noqa: E731
    return RankingQuality(k=k, precision=mean(precision), recall=mean(recall), ndcg=mean(ndcg),
                          coverage=len(shown) / n_items if coverage and n_items else None, users=len(ndcg))


def liked(users: np.ndarray, items: np.ndarray, ratings: np.ndarray, threshold: float = 4.0
          ) -> tuple[np.ndarray, np.ndarray]:
    """The (users, items) pairs rated `threshold` or more: the hits of a top-N list."""
    keep = np.asarray(ratings) >= threshold
    return np.asarray(users)[keep], np.asarray(items)[keep]


def mean_sd(values) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1) of per-fold figures; the sd of one figure is 0."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        raise ValueError("mean_sd of no figures is undefined")
    return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else 0.0)
