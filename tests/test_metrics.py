import math

import numpy as np
import pytest

from mfexp.metrics import rmse

# The tutorial's own RMSE test cases.
CASES = [([1, 2, 3, 4, 5], [2, 1, 3, 5, 6], math.sqrt(0.8)),
         ([10, 10, 9, 9, 8], [10, 10, 9, 9, 8], 0.0),
         ([1, 5, 10, 15, 20], [6, 10, 5, 20, 25], math.sqrt(25))]


@pytest.mark.parametrize("label,pred,expected", CASES)
def test_tutorial_rmse_cases(label, pred, expected):
    assert rmse(np.array(label), np.array(pred)) == pytest.approx(expected, abs=1e-12)


def test_rmse_is_exact_over_all_pairs_not_a_mean_of_batch_rmses():
    label = np.array([1.0, 1.0, 1.0, 5.0])
    pred = np.array([1.0, 1.0, 1.0, 1.0])
    batch_mean = (rmse(label[:2], pred[:2]) + rmse(label[2:], pred[2:])) / 2  # the tutorial's way
    assert rmse(label, pred) == pytest.approx(2.0)
    assert batch_mean == pytest.approx(4 / 2 / math.sqrt(2))
    assert rmse(label, pred) != pytest.approx(batch_mean)


def test_rmse_rejects_empty_and_mismatched():
    with pytest.raises(ValueError):
        rmse(np.array([]), np.array([]))
    with pytest.raises(ValueError):
        rmse(np.array([1.0, 2.0]), np.array([1.0]))


# --- ranking quality -------------------------------------------------------------------------------
def test_ranking_quality_by_hand():
    from mfexp.metrics import liked, ranking_quality

    scores = {0: np.array([6, 5, 4, 3, 2, 1.0]), 1: np.arange(1, 7.0), 2: np.zeros(6)}
    seen = (np.array([0, 2, 1]), np.array([0, 0, 3]))  # user 1 rated item 3: it is not a hit any more
    test = liked(np.array([0, 0, 1, 1, 2]), np.array([1, 4, 3, 5, 2]), np.array([5, 4, 4, 3, 2.0]))
    q = ranking_quality(scores.__getitem__, 3, 6, seen, test, k=2)
    # user 0: top [1, 2], relevant {1, 4}: one hit at rank 1; user 1: relevant {3} is already rated,
    # so not evaluated; user 2 (no relevant item, ties: lower index first) only counts for coverage.
    assert q.users == 1
    assert q.precision == pytest.approx(0.5) and q.recall == pytest.approx(0.5)
    assert q.ndcg == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert q.coverage == pytest.approx(len({1, 2, 5, 4}) / 6)  # tops: [1,2], [5,4], [1,2]
    assert q.as_metrics("test") == {"test_precision_at_2": 0.5, "test_recall_at_2": 0.5,
                                    "test_ndcg_at_2": pytest.approx(q.ndcg), "test_coverage_at_2": q.coverage}


def test_ranking_quality_perfect_and_worst_rankings():
    from mfexp.metrics import ranking_quality

    n_items, relevant = 20, (np.array([0, 0, 0]), np.array([17, 18, 19]))
    none = (np.zeros(0, dtype=int), np.zeros(0, dtype=int))
    best = ranking_quality(lambda u: np.arange(n_items, dtype=float), 1, n_items, none, relevant, k=10)
    assert (best.precision, best.recall, best.ndcg) == (pytest.approx(0.3), 1.0, pytest.approx(1.0))
    worst = ranking_quality(lambda u: -np.arange(n_items, dtype=float), 1, n_items, none, relevant, k=10,
                            coverage=False)
    assert (worst.precision, worst.recall, worst.ndcg, worst.coverage) == (0.0, 0.0, 0.0, None)
