"""Folds (issue 29): a ratings file's k seeded random folds, `mfexp.run data.split=all` (one run per
fold under a parent with the mean and sd), and `sweep.folds` (the sweep's choice on other folds).
Tiny synthetic files only: each fold's model must never see that fold's test part, not even through
implicit feedback, and the printed / reported mean must be the mean of the per-fold runs."""
from __future__ import annotations

import re
from dataclasses import replace

import mlflow
import numpy as np
import pytest

from mfexp.config import DataConfig, validate_data
from mfexp.data import load_dataset
from mfexp.data.splits import kfold_split
from mfexp.errors import ConfigError


def _pairs(data, part) -> set[tuple[int, int]]:
    """(original user id, original item id) of a part: comparable across folds' id tables."""
    return set(zip(data.user_ids[part.users].tolist(), data.item_ids[part.items].tolist()))


def _csr_pairs(data, csr) -> set[tuple[int, int]]:
    rows = np.repeat(np.arange(csr.n_rows), np.diff(csr.indptr))
    return set(zip(data.user_ids[rows].tolist(), data.item_ids[csr.indices].tolist()))


def test_k_random_folds_test_every_rating_once_and_are_seeded():
    n, k = 103, 4
    tests = [kfold_split(n, k, f, seed=0)[1] for f in range(1, k + 1)]
    assert sorted(np.concatenate(tests).tolist()) == list(range(n))  # each rating tested exactly once
    assert {len(t) for t in tests} <= {25, 26}
    for f in range(1, k + 1):
        train, test = kfold_split(n, k, f, seed=0)
        assert not set(train) & set(test) and len(train) + len(test) == n
    assert np.array_equal(kfold_split(n, k, 2, seed=0)[1], tests[1])
    assert not np.array_equal(kfold_split(n, k, 2, seed=1)[1], tests[1])


def test_a_file_with_folds_loads_each_fold_its_holdout_from_its_own_training_part(ratings_file):
    cfg = DataConfig(name="file", path=str(ratings_file), folds=2, val_fraction=0.1)
    folds = [load_dataset(replace(cfg, split=f)) for f in ("f1", "f2")]
    assert [d.split for d in folds] == ["f1", "f2"]
    a, b = folds
    assert not _pairs(a, a.test) & _pairs(b, b.test)
    everything = _pairs(a, a.train) | _pairs(a, a.val) | _pairs(a, a.test)
    assert _pairs(a, a.test) | _pairs(b, b.test) == everything
    for d in folds:  # the holdout is carved out of the fold's training part, never out of its test part
        assert not (_pairs(d, d.train) | _pairs(d, d.val)) & _pairs(d, d.test)
        assert len(d.val) == round(0.1 * (len(d.train) + len(d.val)))
    with pytest.raises(ConfigError, match="data.split=all is each fold in turn.*data.split=f1"):
        load_dataset(replace(cfg, split="all"))


@pytest.mark.parametrize("kw,key", [
    ({"name": "file", "path": "r.csv", "split": "all"}, "data.split"),
    ({"name": "file", "path": "r.csv", "split": "f2"}, "data.folds=5"),
    ({"name": "file", "path": "r.csv", "folds": 1}, "data.folds must be >= 2"),
    ({"name": "file", "path": "r.csv", "folds": 2, "split": "f3"}, "f1..f2"),
    ({"name": "ml100k", "folds": 5}, "data.folds is for data=file"),
    ({"name": "ml100k", "split": "u6"}, "u1, u2, u3, u4, u5, got 'u6' (or all: each fold in turn"),
])
def test_bad_fold_settings_name_the_key(kw, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        validate_data(DataConfig(**kw))


def test_a_file_with_folds_and_the_default_split_means_every_fold():
    assert validate_data(DataConfig(name="file", path="r.csv", split="random", folds=3)).split == "all"
    assert validate_data(DataConfig(name="ml100k", split="all")).split == "all"


def test_run_with_split_all_trains_each_fold_apart_and_prints_the_mean_of_its_runs(cfg, ratings_file, mlflow_uri,
                                                                                   capsys):
    """Two folds of a tiny file, with SVD++ (implicit feedback): each fold's logged model holds the
    implicit feedback of that fold's training part, none of its test part; the parent's and the printed
    mean and sd are those of the fold runs."""
    from mfexp import model_io
    from mfexp.models import to_settings
    from mfexp.run import run

    cfg.data = DataConfig(name="file", path=str(ratings_file), split="all", folds=2)
    cfg.model = to_settings({"_target_": "mfexp.models.svdpp.SVDpp", "name": "svdpp", "k": 8})
    summary = run(cfg)
    out = capsys.readouterr().out
    runs = mlflow.search_runs(experiment_names=["mfexp"], output_format="list")
    parent = [r for r in runs if "mfexp.fold" not in r.data.tags]
    children = sorted((r for r in runs if "mfexp.fold" in r.data.tags), key=lambda r: r.data.params["fold"])
    assert len(parent) == 1 and parent[0].info.run_id == summary["run_id"]
    assert [(r.data.params["fold"], r.data.tags["mfexp.fold"], r.data.params["data.split"]) for r in children] == \
        [("f1", "f1", "f1"), ("f2", "f2", "f2")]
    assert all(r.data.tags["mlflow.parentRunId"] == summary["run_id"] for r in children)
    for r in children:
        fold = load_dataset(replace(cfg.data, split=r.data.params["fold"]))
        folder = mlflow.artifacts.download_artifacts(f"runs:/{r.info.run_id}/model/artifacts/mfexp_model")
        seen = _csr_pairs(fold, model_io.load(folder).net.data.user_items)
        assert seen == _pairs(fold, fold.train)  # the implicit feedback of its training part, exactly
        assert not seen & _pairs(fold, fold.test)
    rmses = [r.data.metrics["final_test_rmse"] for r in children]
    assert len(set(rmses)) == 2
    metrics = parent[0].data.metrics
    assert metrics["test_rmse_mean"] == pytest.approx(np.mean(rmses), abs=1e-12)
    assert metrics["test_rmse_sd"] == pytest.approx(np.std(rmses, ddof=1), abs=1e-12)
    printed = re.search(r"test RMSE mean ± sd over 2 folds: (\d\.\d{4}) ± (\d\.\d{4})", out)
    assert printed, out
    assert printed.group(1) == f"{np.mean(rmses):.4f}" and printed.group(2) == f"{np.std(rmses, ddof=1):.4f}"
    for r, rmse in zip(children, rmses):
        assert re.search(rf"^{r.data.params['fold']} .* {rmse:.4f} ", out, re.M), out
