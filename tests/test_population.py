"""Populations: several trials of one model trained as one network (mfexp.population), and the
sweep that asks, trains, prunes and tells them (mfexp.sweep.population)."""
from __future__ import annotations

import copy

import mlflow
import mxnet as mx
import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from mfexp import population as pop
from mfexp.train import build_net
from mfexp.train import fit

# A member ends where its lone run ends, to float rounding: SGD's per-row update is MXNet's
# formula to the last bits (seen: 1e-9), Adam's computes lr x bias correction in float32 where
# MXNet does it in double (seen: 5e-6 after 5 epochs). The tolerance is stated here, once.
VAL_TOL = 1e-4


@pytest.fixture(scope="module")
def make_config():
    """The real config (conf/) with a model and overrides, on the CPU, untracked."""
    from hydra import compose, initialize_config_dir

    from mfexp import cli

    cli.register_schema()

    def make(model: str, **overrides):
        line = [f"model={model}", "train.progress=false", "train.device=cpu", "tracking.enabled=false",
                *(f"{k}={v}" for k, v in overrides.items())]
        with initialize_config_dir(config_dir=cli.CONF_DIR, version_base="1.3"):
            return cli.to_object(compose(config_name="config", overrides=line))
    return make


def _configs(make_config, model, optimizer, sparse, hyper):
    base = make_config(model=model, **{"train.optimizer": optimizer, "train.sparse_grad": sparse,
                                        "train.epochs": 4, "train.batch_size": 64})
    out = []
    for lr, reg, wd, momentum, init in hyper:
        cfg = copy.deepcopy(base)
        cfg.train.lr, cfg.train.reg, cfg.train.wd, cfg.train.momentum, cfg.train.init_scale = lr, reg, wd, momentum, init
        out.append(cfg)
    return out


# (lr, reg, wd, momentum, init_scale) of three members
HYPER = [(0.01, 0.01, 0.0, 0.9, 0.01), (0.003, 0.1, 1e-4, 0.5, 0.05), (0.02, 0.0, 1e-3, 0.8, 0.1)]
SGD_HYPER = [(0.1, 0.01, 0.0, 0.9, 0.01), (0.05, 0.1, 1e-4, 0.9, 0.05), (0.2, 0.0, 1e-3, 0.9, 0.1)]  # one momentum: the key


@pytest.mark.parametrize("model,optimizer,sparse", [("plain", "adam", True), ("biased", "sgd", False),
                                                    ("biased", "adam", True), ("plain", "sgd", True),
                                                    ("mlp", "sgd", False), ("mlp", "adam", True)])
def test_each_member_trains_as_its_lone_twin(make_config, tiny_data, model, optimizer, sparse):
    """Members differing in lr, reg, wd, momentum and init scale: each one's val RMSE, epoch by
    epoch, and its final weights are those of the same configuration trained alone."""
    cfgs = _configs(make_config, model, optimizer, sparse, SGD_HYPER if optimizer == "sgd" else HYPER)
    members = pop.fit_population([pop.Member(c) for c in cfgs], tiny_data, mx.cpu())
    lone_curves = []
    for cfg, member in zip(cfgs, members):
        net = build_net(cfg, tiny_data, mx.cpu())
        lone = fit(net, tiny_data, cfg.train, mx.cpu(), eval_test=False, final_test=False)
        lone_curves.append([h.val_rmse for h in lone.history])
        assert [h.val_rmse for h in member.result.history] == pytest.approx(lone_curves[-1], abs=VAL_TOL)
        for a, b in zip(net.collect_params().values(), member.net.collect_params().values()):
            np.testing.assert_allclose(b.data().asnumpy(), a.data().asnumpy(), atol=1e-3)
        assert member.result.best_val_rmse == pytest.approx(lone.best_val_rmse, abs=VAL_TOL)
    # the members really differ (a population that trained one configuration P times would pass the above
    # only if every lone run were the same)
    weights = [np.concatenate([p.data().asnumpy().ravel() for p in m.net.collect_params().values()]) for m in members]
    assert all(np.abs(weights[i] - weights[j]).max() > 1e-3 for i in range(3) for j in range(i + 1, 3))


def test_dropout_members_train_at_their_own_rates_and_keep_their_own_weights(make_config, tiny_data):
    """model=dropout: each member drops at its own rate. A member at rate 0 trains as its lone twin;
    members at other rates draw their own masks (no replay alone), so what is kept is their own
    network: its val RMSE, evaluated alone with dropout off, is the one the member reported."""
    from mfexp.train import evaluate

    cfgs = _configs(make_config, "dropout", "sgd", False, SGD_HYPER)
    for c, rate in zip(cfgs, (0.0, 0.5, 0.3)):
        c.model.dropout = rate
    members = pop.fit_population([pop.Member(c) for c in cfgs], tiny_data, mx.cpu())
    scale = (float(tiny_data.rating_min), float(tiny_data.rating_max))
    for cfg, m in zip(cfgs, members):
        lone = fit(build_net(cfg, tiny_data, mx.cpu()), tiny_data, cfg.train, mx.cpu(), final_test=False)
        close = [h.val_rmse for h in m.result.history] == pytest.approx([h.val_rmse for h in lone.history], abs=VAL_TOL)
        assert close == (cfg.model.dropout == 0.0), cfg.model.dropout  # rate 0 exactly; others their own masks
        assert evaluate(m.net, tiny_data.val, mx.cpu(), scale) == pytest.approx(m.result.final_val_rmse, abs=1e-6)
    no_dropout = copy.deepcopy(cfgs[1])
    no_dropout.model.dropout = 0.0
    lone = fit(build_net(no_dropout, tiny_data, mx.cpu()), tiny_data, no_dropout.train, mx.cpu(), final_test=False)
    assert abs(lone.history[-1].val_rmse - members[1].result.history[-1].val_rmse) > VAL_TOL  # the rate was applied


def test_a_pruned_member_leaves_and_the_others_go_on(make_config, tiny_data, monkeypatch):
    """A member whose hook raises (a pruned trial) stops at that epoch; the next epochs' graph holds
    only the members still training; the others train to the end, as their lone twins."""
    cfgs = _configs(make_config, "plain", "adam", True, HYPER)
    sizes = []
    real_step = pop._Step

    def counting_step(net, n_members, batch):
        sizes.append(n_members)
        return real_step(net, n_members, batch)

    monkeypatch.setattr(pop, "_Step", counting_step)

    def prune_at_2(report):
        if report.epoch == 2:
            raise optuna.TrialPruned("pruned at epoch 2")

    done = []
    members = pop.fit_population([pop.Member(cfgs[0]), pop.Member(cfgs[1], prune_at_2), pop.Member(cfgs[2])],
                                 tiny_data, mx.cpu(), on_done=lambda m: done.append(m))
    assert sizes == [3, 3, 2, 2]  # epochs 3 and 4 compute two members
    assert len(members[1].result.history) == 2 and isinstance(members[1].error, optuna.TrialPruned)
    assert [len(m.result.history) for m in (members[0], members[2])] == [4, 4]
    assert done[0] is members[1] and len(done) == 3  # told as it left, before the others ended
    lone = fit(build_net(cfgs[2], tiny_data, mx.cpu()), tiny_data, cfgs[2].train, mx.cpu(), final_test=False)
    assert members[2].result.best_val_rmse == pytest.approx(lone.best_val_rmse, abs=VAL_TOL)


def test_patience_keeps_each_members_best_epoch(make_config, tiny_data):
    """With train.patience, a member that stops early keeps its best epoch's weights (as fit does)."""
    cfgs = _configs(make_config, "biased", "adam", True, [(0.2, 0.0, 0.0, 0.9, 0.01), (0.005, 0.05, 0.0, 0.9, 0.01)])
    for c in cfgs:
        c.train.epochs, c.train.patience = 12, 1
    members = pop.fit_population([pop.Member(c) for c in cfgs], tiny_data, mx.cpu())
    for cfg, m in zip(cfgs, members):
        lone_net = build_net(cfg, tiny_data, mx.cpu())
        lone = fit(lone_net, tiny_data, cfg.train, mx.cpu(), final_test=False)
        assert (m.result.stopped_early, m.result.best_epoch) == (lone.stopped_early, lone.best_epoch)
        assert m.result.final_val_rmse == pytest.approx(lone.final_val_rmse, abs=VAL_TOL)
    assert members[0].result.stopped_early  # lr 0.2 overshoots: the case this test is about


def test_keys_split_structural_choices(make_config):
    a = make_config(model="plain", **{"train.optimizer": "adam"})
    b = copy.deepcopy(a)
    b.train.lr, b.train.reg = 0.5, 0.3
    assert pop.key(a) == pop.key(b)
    for change in (lambda c: setattr(c.train, "batch_size", 7), lambda c: setattr(c.model, "k", 3),
                   lambda c: setattr(c.train, "optimizer", "sgd"), lambda c: setattr(c.train, "seed", 9),
                   lambda c: setattr(c.train, "group_by", "user")):  # the batch order is shared
        c = copy.deepcopy(a)
        change(c)
        assert pop.key(c) != pop.key(a)
    assert pop.supports(a) and pop.supports(make_config(model="mlp", **{"train.optimizer": "adam"}))
    assert not pop.supports(make_config(model="svdpp", **{"train.optimizer": "adam"}))
    d = make_config(model="dropout")
    e = copy.deepcopy(d)
    e.model.dropout = 0.1  # a dropout rate is each member's own, its hidden width is not
    assert pop.key(d) == pop.key(e) and "model.dropout" in pop.per_member(d) and "model.dropout" not in pop.per_member(a)
    e.model.hidden = 7
    assert pop.key(d) != pop.key(e)
    rms = copy.deepcopy(a)
    rms.train.optimizer = "rmsprop"
    assert not pop.supports(rms) and pop.model_supports(rms)


def test_auto_stacks_trials_only_where_a_population_pays(make_config, ratings_file):
    """sweep.population=auto: on the CPU only at batches up to CPU_BATCH_MAX, never for the towers
    (population_on_cpu); on a GPU always, 64 at most; never more than the model's trial budget."""
    from mfexp.sweep.plan import build_plan
    from mfexp.sweep.population import size_for
    from mfexp.sweep.runner import populations_line

    plain = make_config(model="plain", **{"train.batch_size": 64, "train.sparse_grad": True})
    assert pop.auto_size(plain, 100) == 16 and pop.auto_size(plain, 5) == 5
    assert pop.auto_size(plain, 100, largest_batch=pop.CPU_BATCH_MAX * 2) == 1  # its space may draw a larger batch
    assert pop.auto_size(make_config(model="plain", **{"train.batch_size": 256, "train.sparse_grad": True}), 100) == 1
    assert pop.auto_size(make_config(model="mlp", **{"train.batch_size": 64, "train.sparse_grad": True}), 100) == 1
    assert pop.auto_size(make_config(model="plain", **{"train.batch_size": 64}), 100) == 1  # dense gradients
    for model in ("plain", "mlp"):
        on_gpu = make_config(model=model, **{"train.batch_size": 512})
        on_gpu.train.device = "gpu:0"
        assert pop.auto_size(on_gpu, 100) == 64
    assert pop.auto_size(make_config(model="svdpp", **{"train.batch_size": 64, "train.sparse_grad": True}), 100) == 1

    def plan(*overrides):
        return build_plan(["data=file", f"data.path={ratings_file}", "sweep.models=[plain,mlp]",
                           "sweep.population=auto", "sweep.n_trials=40", "tracking.enabled=false", *overrides])

    def size(*overrides):
        p = plan(*overrides)
        return size_for(p, "plain", p.bases["plain"])
    assert size() == 1  # plain's default space draws batches of 128 to 512
    assert size("train.batch_size=64") == 16  # the command line's value fixes it for every model
    assert size("train.batch_size=choice(32,64)") == 16 and size("train.batch_size=choice(64,128)") == 1
    # the console's first line says what auto came to
    assert populations_line(plan()) == ", population auto: one trial at a time here (docs/sweeps.md, Populations)"
    assert populations_line(plan("train.batch_size=64")) == ", populations plain 16"
    assert populations_line(plan("sweep.population=1")) == ""


def test_a_sweep_trains_populations_with_exact_counts_and_one_mlflow_run_each(ratings_file, tmp_path, mlflow_uri):
    """sweep.population=4, 9 trials of plain, k searched: every trial is its own Optuna trial and
    MLflow run (per-epoch metrics, COMPLETE/FINISHED or PRUNED/KILLED), counts are exact, and trials
    are asked four at a time sharing the first one's k, so they train as populations of 4."""
    from mfexp.sweep.plan import build_plan
    from mfexp.sweep.orchestrate import run_sweep
    from mfexp.sweep.storage import open_storage, study_name

    plan = build_plan(["data=file", f"data.path={ratings_file}", "sweep=smoke", f"sweep.root={tmp_path / 'sweeps'}",
                       "sweep.models=[plain]", "train.epochs=3", "sweep.n_trials=9", "sweep.population=4",
                       "sweep.ensemble=false", "sweep.enqueue_tutorial=false"])
    run_sweep(plan)
    study = optuna.load_study(study_name=study_name(plan.sweep, "plain"), storage=open_storage(plan.sweep))
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 9 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    sizes = [t.user_attrs.get("population", 1) for t in trials]
    assert sorted(sizes) == [1] + [4] * 8  # 4 + 4 + the last one: model.k is drawn once per population
    anchored = [t for t in trials if "population_anchor" in t.user_attrs]
    assert len(anchored) == 6  # three members follow each of two anchors
    # each complete member kept its holdout predictions (for the blend), and they give its val RMSE
    from mfexp.data import load_dataset
    from mfexp.metrics import rmse

    data = load_dataset(plan.bases["plain"].data)
    kept = tmp_path / "sweeps" / "smoke" / "val_predictions"
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(p.name for p in kept.glob("plain-*.npy")) == sorted(f"plain-{t.number}.npy" for t in complete)
    for t in complete:
        pred = np.clip(np.load(kept / f"plain-{t.number}.npy"), data.rating_min, data.rating_max)
        assert rmse(data.val.ratings, pred) == pytest.approx(t.value, abs=1e-4)
    for t in anchored:  # sampled: the anchor's k, their own lr and reg
        anchor = next(a for a in trials if a.number == t.user_attrs["population_anchor"])
        assert t.params["model.k"] == anchor.params["model.k"] and t.params["train.lr"] != anchor.params["train.lr"]
    exp = mlflow.get_experiment_by_name("mfexp-sweep-smoke")
    runs = [r for r in mlflow.search_runs([exp.experiment_id], output_format="list")
            if "optuna.trial_number" in r.data.tags and "mfexp.best" not in r.data.tags]
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in runs) == sorted(t.number for t in trials)
    client = mlflow.tracking.MlflowClient()
    by_number = {t.number: t for t in trials}
    for run in runs:
        trial = by_number[int(run.data.tags["optuna.trial_number"])]
        state = run.data.tags["optuna.trial_state"]
        assert (state, run.info.status) in {("COMPLETE", "FINISHED"), ("PRUNED", "KILLED")}
        assert state == trial.state.name
        history = client.get_metric_history(run.info.run_id, "val_rmse")
        assert [m.step for m in history] == sorted(trial.intermediate_values) or trial.user_attrs.get("mfexp.reference")
        if state == "COMPLETE":
            assert run.data.metrics["best_val_rmse"] == pytest.approx(trial.value)
            assert min(m.value for m in history) == pytest.approx(trial.value)


def test_a_models_wall_time_counts_overlapping_trials_once():
    """A population's members run at the same time: the report's wall time is their union, not their sum."""
    import datetime as dt

    from mfexp.sweep.runner import busy_seconds

    t0 = dt.datetime(2026, 1, 1)
    trials = []
    for a, b in [(0, 10), (0, 10), (2, 8), (12, 15)]:
        t = optuna.trial.create_trial(state=TrialState.COMPLETE, value=1.0)
        t.datetime_start, t.datetime_complete = t0 + dt.timedelta(seconds=a), t0 + dt.timedelta(seconds=b)
        trials.append(t)
    assert busy_seconds(trials) == 13.0
