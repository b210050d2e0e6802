"""Data layer: ML-100K (GroupLens' folds u1..u5) and any ratings file, as numpy arrays.

Knows nothing of MXNet or MLflow. `load_dataset(cfg.data)` is the entry point.
"""
from mfexp.data.features import Csr, SideFeatures, implicit_feedback
from mfexp.data.loader import load_dataset
from mfexp.data.ratings import Dataset, Ratings

__all__ = ["Ratings", "Dataset", "load_dataset", "Csr", "SideFeatures", "implicit_feedback"]
