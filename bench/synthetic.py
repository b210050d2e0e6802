"""Seeded synthetic rating sets shaped like MovieLens 25M, as numpy arrays (no text files).

ML-25M: 25,000,095 ratings by 162,541 users of 59,047 rated movies, half stars 0.5..5, mean
about 3.5, long-tailed on both sides. Here users and items are drawn from shifted Zipf
weights (the busiest user about 0.1% of all ratings, the most rated item about 0.4%), their
indices shuffled so popularity is not sorted by index, and each rating is
3.5 + user bias + item bias + noise rounded to a half star. (user, item) pairs may repeat,
which costs the training loop exactly as a distinct pair does.
"""
from __future__ import annotations

import numpy as np

from mfexp.data import Dataset, Ratings

ML25M_USERS = 162_541
ML25M_ITEMS = 59_047
CHUNK = 1 << 20  # draw in chunks: no 25M-long float64 temporaries


def zipf_cdf(n: int, exponent: float, shift: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(cumulative weights over ranks, a random index for each rank)."""
    weights = (np.arange(n, dtype=np.float64) + shift) ** -exponent
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    return cdf, rng.permutation(n).astype(np.int32)


def ml25m_like(n_ratings: int, seed: int = 0, n_users: int = ML25M_USERS, n_items: int = ML25M_ITEMS):
    """(users int32, items int32, ratings float32) arrays of `n_ratings` long-tailed ratings."""
    rng = np.random.default_rng(seed)
    user_cdf, user_of_rank = zipf_cdf(n_users, 0.9, 100.0, rng)
    item_cdf, item_of_rank = zipf_cdf(n_items, 1.0, 30.0, rng)
    user_bias = rng.normal(0.0, 0.4, n_users).astype(np.float32)
    item_bias = rng.normal(0.0, 0.5, n_items).astype(np.float32)
    users = np.empty(n_ratings, np.int32)
    items = np.empty(n_ratings, np.int32)
    ratings = np.empty(n_ratings, np.float32)
    for lo in range(0, n_ratings, CHUNK):
        hi = min(lo + CHUNK, n_ratings)
        u = user_of_rank[np.minimum(np.searchsorted(user_cdf, rng.random(hi - lo)), n_users - 1)]
        i = item_of_rank[np.minimum(np.searchsorted(item_cdf, rng.random(hi - lo)), n_items - 1)]
        r = 3.5 + user_bias[u] + item_bias[i] + rng.normal(0.0, 0.8, hi - lo).astype(np.float32)
        users[lo:hi], items[lo:hi] = u, i
        ratings[lo:hi] = np.clip(np.rint(r * 2) / 2, 0.5, 5.0)
    return users, items, ratings


def ml25m_like_dataset(n_ratings: int, seed: int = 0, n_users: int = ML25M_USERS, n_items: int = ML25M_ITEMS):
    """An mfexp Dataset whose train part holds all `n_ratings` (val and test empty): what one
    training epoch at that scale costs. Timestamps are zeros (np.zeros: no resident pages)."""
    users, items, ratings = ml25m_like(n_ratings, seed, n_users, n_items)
    train = Ratings(users, items, ratings, np.zeros(n_ratings, np.int64))
    return Dataset(name=f"synthetic-ml25m-{n_ratings}", split="random", train=train, val=Ratings.empty(),
                   test=Ratings.empty(), n_users=n_users, n_items=n_items,
                   user_ids=np.arange(1, n_users + 1, dtype=np.int64),
                   item_ids=np.arange(1, n_items + 1, dtype=np.int64),
                   rating_min=0.5, rating_max=5.0, item_titles=None)


def describe(users: np.ndarray, items: np.ndarray, ratings: np.ndarray) -> dict:
    """Shape figures to compare with ML-25M: distinct ids, top shares, ratings per user."""
    per_user = np.bincount(users)
    per_item = np.bincount(items)
    n = len(users)
    return {"ratings": n, "users_seen": int((per_user > 0).sum()), "items_seen": int((per_item > 0).sum()),
            "top_user_share": round(float(per_user.max()) / n, 5), "top_item_share": round(float(per_item.max()) / n, 5),
            "median_ratings_per_user": float(np.median(per_user[per_user > 0])),
            "mean_rating": round(float(ratings.mean()), 3)}
