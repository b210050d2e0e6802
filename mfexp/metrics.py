"""Rating-prediction metrics: pure numpy, exact over every rating."""
from __future__ import annotations

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
