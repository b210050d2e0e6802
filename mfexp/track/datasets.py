"""What a run trained on and was judged on, as MLflow dataset inputs (the runs table's Dataset
column): each data part's name, a digest of its rows, where it comes from and its size. Metadata
only: the ratings themselves are not copied into the tracking store."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from mlflow.data.dataset_source import DatasetSource
from mlflow.data.meta_dataset import MetaDataset
import numpy as np


def _digest(data, part) -> str:
    """8 hex digits of sha256 over the part's (original user id, original item id, rating) rows."""
    h = hashlib.sha256()
    for column in (data.user_ids[part.users], data.item_ids[part.items], part.ratings):
        h.update(np.ascontiguousarray(column, dtype=np.float64).tobytes())
    return h.hexdigest()[:8]


def dataset_parts(data, data_cfg, test: bool) -> list[tuple[str, str, str, Any]]:
    """(context, name, source, part) for the train part, the validation holdout (when there is
    one) and, when `test`, the test part: for ML-100K the GroupLens fold they come from, for a
    ratings file its path."""
    val = f"{data_cfg.val_fraction:.0%} holdout, seed {data_cfg.seed}"
    if data.name == "ml100k":
        base, test_file = f"ml-100k {data.split}.base", f"ml-100k {data.split}.test"
        names = {"train": f"{base} (train)", "validation": f"{base} (holdout)", "test": test_file}
        sources = {"train": f"{base} minus the {val}", "validation": f"{base} ({val})",
                   "test": f"{test_file} (GroupLens)"}
    else:
        path = str(Path(data_cfg.path).resolve()) if data_cfg.path else data.name
        stem = Path(path).name
        cut = (f"fold {data.split} of {data_cfg.folds} random folds" if getattr(data_cfg, "folds", None)
               else f"{1 - data_cfg.test_fraction:.0%}/{data_cfg.test_fraction:.0%} split")
        names = {"train": f"{stem} (train)", "validation": f"{stem} (holdout)", "test": f"{stem} (test)"}
        sources = {"train": f"{path} ({cut}, train minus the {val})", "validation": f"{path} ({cut}, {val})",
                   "test": f"{path} ({cut}, test part, seed {data_cfg.seed})"}
    parts = [("train", data.train), ("validation", data.val)] + ([("test", data.test)] if test else [])
    return [(c, names[c], sources[c], p) for c, p in parts if p is not None and len(p)]


def _mlflow_dataset(name: str, source: str, digest: str, rows: int):
    """A metadata-only MLflow dataset: name, digest, where it comes from, its row count."""
    class RatingsSource(DatasetSource):
        """A description of where ratings come from (a GroupLens fold, a file and its split)."""

        @staticmethod
        def _get_source_type() -> str:
            return "mfexp"

        def load(self):
            raise NotImplementedError("reload the data with mfexp.data.load_dataset and the run's config.yaml")

        @staticmethod
        def _can_resolve(raw_source) -> bool:
            return False

        @classmethod
        def _resolve(cls, raw_source):
            raise NotImplementedError

        def to_dict(self):
            return {"uri": source}

        @classmethod
        def from_dict(cls, source_dict):
            return cls()

    class Ratings(MetaDataset):
        @property
        def profile(self):
            return {"num_rows": rows}

        def to_dict(self):
            return {**super().to_dict(), "profile": json.dumps(self.profile)}

    return Ratings(RatingsSource(), name=name, digest=digest)


def mlflow_inputs(data, data_cfg, test: bool) -> tuple[list, list[str]]:
    """(MLflow datasets, their contexts) for mlflow.log_inputs: see `dataset_parts`."""
    parts = dataset_parts(data, data_cfg, test)
    return [_mlflow_dataset(n, s, _digest(data, p), len(p)) for _, n, s, p in parts], [c for c, *_ in parts]
