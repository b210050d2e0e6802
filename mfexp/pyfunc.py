"""The MLflow pyfunc face of a trained model: `mlflow.pyfunc.load_model("runs:/<id>/model")`.

predict takes a DataFrame with columns user_id, movie_id (original ids) and, optionally, timestamp
(unix seconds: the day matters to models that read it, such as fm; without it each user's last
training day is used), and returns predicted ratings clipped to the rating scale. The MXNet network is rebuilt in `load_context` from the
model folder and kept out of the pickle (MLflow pickles the PythonModel after load_context
when an input example is given).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from mfexp.models import io as model_io

USER_COL, ITEM_COL, TIME_COL = "user_id", "movie_id", "timestamp"  # timestamp: optional, unix seconds


class MFModel(PythonModel):
    def __init__(self) -> None:
        self._trained = None

    def __getstate__(self):
        return {}  # nothing of the network: it is rebuilt from the artifacts

    def __setstate__(self, state) -> None:
        self._trained = None

    def load_context(self, context) -> None:
        self._trained = model_io.load(context.artifacts["mfexp_model"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:
        if self._trained is None:
            self.load_context(context)
        missing = {USER_COL, ITEM_COL} - set(model_input.columns)
        if missing:
            raise ValueError(f"input needs columns {USER_COL!r} and {ITEM_COL!r}; missing {sorted(missing)}")
        users = model_input[USER_COL].to_numpy(dtype=np.int64)
        items = model_input[ITEM_COL].to_numpy(dtype=np.int64)
        when = None
        if TIME_COL in model_input.columns and model_input[TIME_COL].notna().all():
            when = model_input[TIME_COL].to_numpy(dtype=np.int64)
        return model_io.predict_ids(self._trained, users, items, timestamps=when)
