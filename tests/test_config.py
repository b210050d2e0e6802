"""Config validation names the key to fix; the real conf/ composes and reproduces the tutorial."""
import dataclasses

import optuna
import pytest

from mfexp.config import Config, flatten
from mfexp.errors import ConfigError
from mfexp.models import validate

BAD = [("train", "lr", 0.0), ("train", "batch_size", 0), ("train", "epochs", 0),
       ("train", "optimizer", "sgdd"), ("train", "device", "tpu"), ("data", "val_fraction", 1.0),
       ("data", "split", "u6")]


@pytest.mark.parametrize("group,key,value", BAD)
def test_bad_values_name_their_key(group, key, value):
    cfg = Config()
    setattr(getattr(cfg, group), key, value)
    with pytest.raises(ConfigError, match=rf"{group}\.{key}"):
        validate(cfg)


MLP = {"_target_": "mfexp.models.towers.TowerMLP", "name": "mlp", "k": 64, "hidden": 64, "dropout": 0.0}
BAD_MODELS = [({"k": 0}, "model.k must be > 0"), ({"hidden": -1}, "model.hidden must be > 0"),
              ({"dropout": 1.0}, r"model.dropout must be in \[0, 1\)"), ({"dropout": -0.1}, "model.dropout"),
              ({"kk": 3}, "model.kk is not a setting of model._target_=mfexp.models.towers.TowerMLP"),
              ({"k": "abc"}, "model.k: .*abc"), ({"name": ""}, "model.name is empty"),
              ({"_target_": "mfexp.models.nosuch.Net"}, "model._target_=mfexp.models.nosuch.Net: cannot import"),
              ({"_target_": "mfexp.models.towers.Nope"}, "module mfexp.models.towers has no Nope"),
              ({"_target_": "mfexp.config.Config"}, "is not a model: it must subclass"),
              ({"_target_": "nodots"}, "model._target_ must be a dotted class path")]


@pytest.mark.parametrize("change,message", BAD_MODELS)
def test_bad_model_settings_name_the_key_and_target(change, message):
    cfg = Config(model={**MLP, **change})
    with pytest.raises(ConfigError, match=message):
        validate(cfg)


def test_model_settings_become_the_models_typed_dataclass():
    from mfexp.models.towers import TowerMLP, TowerSettings

    cfg = validate(Config(model=dict(MLP, hidden=32)))
    assert type(cfg.model) is TowerSettings and cfg.model.hidden == 32
    assert cfg.model._target_ == f"{TowerMLP.__module__}.TowerMLP"


def test_defaults_are_the_tutorials(cfg):
    assert (cfg.train.optimizer, cfg.train.lr, cfg.train.momentum, cfg.train.wd) == ("sgd", 0.05, 0.9, 1e-4)
    assert (cfg.model.name, cfg.model.k, cfg.data.split) == ("plain", 64, "u1")
    assert cfg.train.init_scale == 0.01
    validate(cfg)


def test_a_model_without_the_default_models_keys_composes_from_its_yaml_alone():
    # conf/model/autorec.yaml has no `k`: composed onto the schema's default model (plain's
    # settings) it used to keep plain's k, which AutoRec's settings refuse
    from hydra import compose, initialize_config_dir

    from mfexp import cli
    from mfexp.models.autorec import AutoRecSettings

    cli.register_schema()
    with initialize_config_dir(config_dir=cli.CONF_DIR, version_base="1.3"):
        dcfg = compose(config_name="config", overrides=["model=autorec", "model.hidden=32"])
    cfg = validate(cli.to_object(dcfg))
    assert type(cfg.model) is AutoRecSettings and cfg.model.hidden == 32 and not hasattr(cfg.model, "k")


def test_flatten_gives_dotted_keys():
    cfg = validate(Config())
    flat = flatten(cfg)
    assert flat["model.k"] == 64 and flat["train.lr"] == 0.05 and flat["data.split"] == "u1"
    assert flat["model._target_"] == "mfexp.models.dot.DotProduct"
    assert all("." in k for k in flat)
    groups = [getattr(cfg, f.name) for f in dataclasses.fields(Config)]
    assert len(flat) == sum(len(dataclasses.fields(g)) for g in groups)


@pytest.mark.parametrize("override,message", [
    ("model.kk=3", "model.kk is not a config key"),
    ("model=wrongmodel", "model=wrongmodel: conf/model/ has no wrongmodel.yaml"),
    ("trian.lr=0.1", r"trian.lr is not a config key \(did you mean train.lr\?\)"),
    ("+trian.lr=0.1", r"trian.lr is not a config key \(did you mean train.lr\?\)"),
    ("++train.lrr=0.1", r"train.lrr is not a config key \(did you mean train.lr\?\)"),
    ("train.lr=abc", "train.lr: Value 'abc' of type 'str' could not be converted to Float"),
])
def test_composition_errors_are_config_errors_naming_the_key(override, message):
    from mfexp import cli

    cli.register_schema()
    with pytest.raises(ConfigError, match=message) as err:
        cli.compose("config", [override], "python -m mfexp.run")
    assert "+" not in str(err.value)  # never Hydra's hint to append the misspelt key with '+'


def test_the_main_jobs_config_composes_conf_sweep_default(tmp_path):
    """`make sweep` composes conf/sweep.yaml with conf/sweep/default.yaml: the seven models, their spaces
    (each value checked against the config at plan time) and the budget the README describes."""
    from mfexp.sweep.plan import build_plan

    plan = build_plan([f"sweep.root={tmp_path}"])
    assert plan.sweep.name == "default" and plan.sweep.models == ["plain", "mlp", "dropout", "biased", "svdpp", "fm",
                                                                   "autorec"]
    assert (plan.sweep.n_trials, plan.sweep.timeout, plan.sweep.sampler, plan.sweep.pruner) == (5, 900, "tpe", "forecast")
    assert plan.sweep.model_trials == {"plain": 16, "biased": 16} and plan.sweep.population == "auto"
    assert plan.sweep.ensemble
    for model in plan.sweep.models:
        train = plan.bases[model].train
        assert (train.epochs, train.patience, train.wd, train.sparse_grad) == (30, 3, 0.0, True), model
        assert plan.bases[model].model.name == model
        space = plan.spaces[model]
        size = "model.hidden" if model == "autorec" else "model.k"
        assert {"train.reg", size, "train.lr", "train.batch_size"} <= set(space.distributions), model
    assert plan.spaces["biased"].fixed == {"train.optimizer": "adam"}
    assert plan.spaces["plain"].fixed == {"train.optimizer": "adam", "train.epochs": 60}  # twice the sweep's
    assert plan.spaces["fm"].fixed == {"train.optimizer": "adam", "train.swa": 3} == plan.spaces["svdpp"].fixed
    assert {"model.reg_features"} <= set(plan.spaces["fm"].distributions)
    assert plan.spaces["mlp"].fixed == {"train.optimizer": "sgd"} == plan.spaces["dropout"].fixed
    assert "model.dropout" in plan.spaces["dropout"].distributions
    assert "model.hidden" in plan.spaces["mlp"].distributions and "model.hidden" not in plan.spaces["plain"].distributions


def test_a_model_setting_given_to_every_model_is_left_out_where_a_model_lacks_it(tmp_path):
    from mfexp.errors import ConfigError
    from mfexp.sweep.plan import build_plan

    # conf/sweep/smoke.yaml searches model.k for every model (sweep.space.common); autorec has no k
    plan = build_plan(["sweep=smoke", "sweep.models=[biased,autorec]", f"sweep.root={tmp_path}",
                       "model.hidden=choice(8,16)"])
    assert "model.k" in plan.spaces["biased"].distributions and "model.k" not in plan.spaces["autorec"].distributions
    assert "model.hidden" in plan.spaces["autorec"].distributions
    assert "model.hidden" not in plan.spaces["biased"].distributions
    # a key no model of the sweep has is a typo, not a key to leave out
    with pytest.raises(ConfigError, match=r"sweep.space: model.kk is not a config key of any model of the sweep"):
        build_plan(["sweep=smoke", f"sweep.root={tmp_path}", "model.kk=choice(8,16)"])


def test_sweep_refit_names_only_models_of_the_sweep():
    from mfexp.config import SweepConfig, refits, validate_sweep
    from mfexp.errors import ConfigError

    sweep = validate_sweep(SweepConfig(models=["plain", "fm"], refit=["fm"]))
    assert refits(sweep, "fm") and not refits(sweep, "plain")
    assert refits(validate_sweep(SweepConfig(models=["plain"], refit=True)), "plain")
    with pytest.raises(ConfigError, match=r"sweep.refit must be true, false, auto or a list of the sweep's models"):
        validate_sweep(SweepConfig(models=["plain"], refit=["svdpp"]))


def test_the_default_sweep_refits_the_models_whose_class_says_so(tmp_path):
    """sweep.refit=auto (the default sweep's) becomes the list of its models with Recommender.refit:
    the plan, the parent run's params and report.md name them; the towers and plain MF replay instead."""
    from mfexp.sweep.plan import build_plan

    plan = build_plan([f"sweep.root={tmp_path}", "sweep.models=[plain,mlp,fm,autorec,svdpp]"])
    assert plan.sweep.refit == ["fm", "autorec", "svdpp"]
    assert build_plan([f"sweep.root={tmp_path}", "sweep.models=[plain,biased]"]).sweep.refit == []
    assert build_plan([f"sweep.root={tmp_path}", "sweep.models=[plain,fm]", "sweep.refit=false"]).sweep.refit is False


def test_sweep_pruner_args_reach_the_pruner_and_bad_ones_stop_the_plan():
    from mfexp.sweep.plan import build_plan
    from mfexp.sweep.search import make_pruner

    plan = build_plan(["sweep.models=[plain]", "sweep.pruner=median",
                       "+sweep.pruner_args={n_startup_trials:1,n_warmup_steps:2}"])
    pruner = make_pruner(plan.sweep, 30)
    assert pruner._n_startup_trials == 1 and pruner._n_warmup_steps == 2
    with pytest.raises(ConfigError, match=r"sweep.pruner_args=\{'min_resource': 2\} do not fit the median pruner"):
        build_plan(["sweep.models=[plain]", "sweep.pruner=median", "+sweep.pruner_args={min_resource:2}"])


def test_sweep_sampler_args_reach_the_sampler_over_mfexps_and_bad_ones_stop_the_plan():
    from mfexp.sweep.plan import build_plan
    from mfexp.sweep.search import make_sampler

    default = make_sampler(build_plan(["sweep.models=[plain]"]).sweep)
    assert default._multivariate and default._group and default._n_startup_trials == 5
    plan = build_plan(["sweep.models=[plain]", "+sweep.sampler_args={multivariate:false,group:false,n_startup_trials:3}"])
    tpe = make_sampler(plan.sweep)
    assert not tpe._multivariate and not tpe._group and tpe._n_startup_trials == 3
    with pytest.raises(ConfigError, match=r"sweep.sampler_args=\{'scramble': True\} do not fit the random sampler"):
        build_plan(["sweep.models=[plain]", "sweep.sampler=random", "+sweep.sampler_args={scramble:true}"])


def test_samplers_and_pruners_are_target_entries_a_user_can_add_to():
    """sweep.sampler / sweep.pruner name _target_ entries (conf/sweep.yaml); the run adds only what it
    alone knows (the seed, constant liar for several workers, the epoch budget); a user's own entry is
    built the same way, and a bad name or class path stops the plan with the key."""
    from mfexp.sweep.plan import build_plan
    from mfexp.sweep.search import make_pruner, make_sampler

    plan = build_plan(["sweep.models=[plain]", "sweep.seed=7", "sweep.n_workers=2", "sweep.pruner=hyperband",
                       "+sweep.samplers.mine={_target_:optuna.samplers.NSGAIISampler,population_size:8}"])
    tpe = make_sampler(plan.sweep, worker=1)
    assert isinstance(tpe, optuna.samplers.TPESampler) and tpe._constant_liar
    pruner = make_pruner(plan.sweep, 17)
    assert isinstance(pruner, optuna.pruners.HyperbandPruner) and pruner._max_resource == 17
    plan.sweep.sampler = "mine"
    mine = make_sampler(plan.sweep, worker=1)
    assert isinstance(mine, optuna.samplers.NSGAIISampler) and mine._population_size == 8
    with pytest.raises(ConfigError, match=r"sweep.sampler must be one of tpe, random, .*got 'nope'.*"
                                          r"'\+sweep.samplers.nope=\{_target_:pkg.Class\}'"):
        build_plan(["sweep.models=[plain]", "sweep.sampler=nope"])
    with pytest.raises(ConfigError, match=r"sweep.pruners.mine._target_=optuna.pruners.Nope: cannot import it"):
        build_plan(["sweep.models=[plain]", "+sweep.pruners.mine={_target_:optuna.pruners.Nope}", "sweep.pruner=mine"])


def test_the_gp_sampler_without_torch_says_which_torch_to_install(monkeypatch):
    """PyPI's default torch is the CUDA build (about 5 GB): the message points at the CPU one."""
    import importlib.util

    from mfexp.sweep.plan import build_plan
    from mfexp.sweep.search import make_sampler

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else find_spec(name, *a))
    plan = build_plan(["sweep.models=[plain]"])
    plan.sweep.sampler = "gp"
    with pytest.raises(ConfigError, match=r"sweep.sampler=gp needs the 'torch' package.*download.pytorch.org/whl/cpu"):
        make_sampler(plan.sweep)
