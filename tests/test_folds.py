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

from mfexp.config import DataConfig, SweepConfig, sweep_folds, validate_data
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


def test_sweep_folds_leave_out_the_fold_chosen_on_and_refuse_what_is_not_a_fold():
    ml = DataConfig(name="ml100k", split="u1")
    assert sweep_folds(SweepConfig(folds="all"), ml) == ["u2", "u3", "u4", "u5"]
    assert sweep_folds(SweepConfig(folds=["u1", "u3", "u3"]), ml) == ["u3"]
    assert sweep_folds(SweepConfig(), ml) == []
    with pytest.raises(ConfigError, match="sweep.folds must list a fold besides data.split=u1"):
        sweep_folds(SweepConfig(folds=["u1"]), ml)
    with pytest.raises(ConfigError, match="sweep.folds must be null, all or a list of folds"):
        sweep_folds(SweepConfig(folds=["u7"]), ml)
    with pytest.raises(ConfigError, match="data.folds=k"):
        sweep_folds(SweepConfig(folds="all"), DataConfig(name="file", path="r.csv", split="random"))
    with pytest.raises(ConfigError, match="a sweep chooses on one fold's holdout"):
        sweep_folds(SweepConfig(), DataConfig(name="ml100k", split="all"))


def test_the_fold_table_puts_the_peers_figures_on_the_same_folds_beside_the_choice():
    from mfexp.sweep.report import fold_lines
    from mfexp.sweep.results import FoldFigures, ModelOutcome

    o = ModelOutcome(model="fm", study_name="s", test_rmse=0.89,
                     folds=FoldFigures("u1", {"u1": 0.89, "u3": 0.88}, cost_s=75.0))
    text = "\n".join(fold_lines([o]))
    assert "|  | u1 (chosen on) | u3 | mean ± sd |" in text
    assert "| **fm**, this sweep's choice | 0.8900 | 0.8800 | **0.8850 ± 0.0071** |" in text
    # the myFM figures on u1 and u3 (0.8828, 0.8722), their mean and sd over those two folds
    myfm = "myFM rank 10 + implicit + side + day (untuned, 512 samples)"
    assert f"| {myfm} | 0.8828 | 0.8722 | 0.8775 ± 0.0075 |" in text
    assert "Cost: 1m15s of training on u3" in text


def test_run_with_split_all_trains_each_fold_apart_and_prints_the_mean_of_its_runs(cfg, ratings_file, mlflow_uri,
                                                                                   capsys):
    """Two folds of a tiny file, with SVD++ (implicit feedback): each fold's logged model holds the
    implicit feedback of that fold's training part, none of its test part; the parent's and the printed
    mean and sd are those of the fold runs."""
    from mfexp.models import io as model_io
    from mfexp.models import to_settings
    from mfexp.experiment import run

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


def test_sweep_folds_trains_each_choice_on_the_other_fold_apart_and_reports_the_mean_of_the_runs(
        ratings_file, tmp_path, mlflow_uri, monkeypatch):
    """A two-fold sweep chosen on f1: every network trained on f2 sees f2's training part only (its
    implicit feedback too); the report's and the best runs' mean are those of the runs; a resumed sweep
    reads the fold figures back instead of training again."""
    import mfexp.sweep.folds
    from mfexp.sweep.plan import build_plan
    from mfexp.sweep.orchestrate import run_sweep

    trained: list[tuple] = []
    real_fit = mfexp.sweep.folds.fit

    def spy(net, data, *args, **kwargs):
        implicit = net.data.user_items
        trained.append((data.split, _pairs(data, data.train), _pairs(data, data.test),
                        None if implicit is None else _csr_pairs(data, implicit)))
        return real_fit(net, data, *args, **kwargs)

    monkeypatch.setattr(mfexp.sweep.folds, "fit", spy)  # where the other folds' training looks it up
    plan = build_plan(["data=file", f"data.path={ratings_file}", "data.folds=2", "data.split=f1", "sweep=smoke",
                       f"sweep.root={tmp_path / 'sweeps'}", "sweep.models=[biased,svdpp]", "sweep.folds=all",
                       "sweep.n_trials=1", "train.epochs=2", "train.batch_size=256"])
    outcomes = {o.model: o for o in run_sweep(plan)}
    f2 = load_dataset(DataConfig(name="file", path=str(ratings_file), folds=2, split="f2"))
    on_f2 = [t for t in trained if t[0] == "f2"]
    assert len(on_f2) == 2  # biased and svdpp, once each
    for _, train, test, implicit in on_f2:
        assert test == _pairs(f2, f2.test) and train == _pairs(f2, f2.train) and not train & test
        assert implicit is None or implicit == train
    assert any(t[3] is not None for t in on_f2)  # svdpp's implicit feedback was checked

    runs = mlflow.search_runs(experiment_names=["mfexp-sweep-smoke"], output_format="list")
    by_id = {r.info.run_id: r for r in runs}
    report = (tmp_path / "sweeps" / "smoke" / "report.md").read_text()
    for model in ("biased", "svdpp", "ensemble"):
        best = by_id[outcomes[model].best_run_id]
        folds = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == best.info.run_id]
        assert [(r.data.params["fold"], r.data.tags["mfexp.fold"]) for r in folds] == [("f2", "f2")], model
        rmses = [best.data.metrics["test_rmse"], folds[0].data.metrics["test_rmse"]]
        mean, sd = np.mean(rmses), np.std(rmses, ddof=1)
        assert best.info.status == "FINISHED"  # reopened for its folds, closed as it was
        assert best.data.metrics["folds_test_rmse_mean"] == pytest.approx(mean, abs=1e-12), model
        assert best.data.metrics["folds_test_rmse_sd"] == pytest.approx(sd, abs=1e-12), model
        row = re.search(rf"^\| \*\*{model}\*\*, this sweep's choice \| (\S+) \| (\S+) \| \*\*(\S+) ± (\S+)\*\* \|$",
                        report, re.M)
        assert row, report
        assert row.groups() == tuple(f"{v:.4f}" for v in (*rmses, mean, sd)), model
    assert "Cost: " in report and "measured on this project's machine, myFM 0.4 / Surprise" in report

    before = len(runs)
    trained.clear()
    again = {o.model: o for o in run_sweep(plan)}
    assert not trained  # every figure read back: nothing trained twice
    assert len(mlflow.search_runs(experiment_names=["mfexp-sweep-smoke"], output_format="list")) == before + 1
    assert again["svdpp"].folds.rmse == outcomes["svdpp"].folds.rmse
