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
