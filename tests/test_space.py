"""Search spaces in Hydra's override grammar -> Optuna distributions (mfexp.sweep.space)."""
import math

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from mfexp.errors import ConfigError
from mfexp.sweep.space import GRAMMAR_HINT, SearchSpace, merge_space_overrides, parse_space

optuna.logging.set_verbosity(optuna.logging.WARNING)

Cat, Flt, Int = CategoricalDistribution, FloatDistribution, IntDistribution


def dist(expr):
    space = parse_space({"model.k": expr})
    assert not space.fixed
    return space.distributions["model.k"]


# --------------------------------------------------------------------------- grammar -> distribution


@pytest.mark.parametrize(
    "expr, expected",
    [
        # choice: categorical, values keep their types
        ("choice(16,32,64,128,256)", Cat([16, 32, 64, 128, 256])),
        ("choice(sgd,adam)", Cat(["sgd", "adam"])),
        ("choice(0.1, 1e-3)", Cat([0.1, 0.001])),
        ("choice(5)", Cat([5])),
        ("16,32", Cat([16, 32])),  # Hydra's short form of choice()
        ("sort(choice(3,1,2))", Cat([1, 2, 3])),
        # range: stop excluded, like Python's range
        ("range(5,30,5)", Int(5, 25, step=5)),
        ("range(5,31,5)", Int(5, 30, step=5)),
        ("range(5)", Int(0, 4)),
        ("range(1,2)", Int(1, 1)),
        ("range(10,1,-3)", Int(4, 10, step=3)),  # 10, 7, 4
        ("tag(log, range(1,100))", Int(1, 99, log=True)),
        ("range(0,1,0.25)", Flt(0.0, 0.75, step=0.25)),
        ("range(0.5,2.5,0.5)", Flt(0.5, 2.0, step=0.5)),
        ("range(1,2.0)", Flt(1.0, 1.0, step=1.0)),
        # interval: float, or int when both ends are written as ints
        ("interval(0.0,0.7)", Flt(0.0, 0.7)),
        ("interval(16,256)", Int(16, 256)),
        ("interval(1,10.0)", Flt(1.0, 10.0)),
        ("interval(-1,1)", Int(-1, 1)),
        ("tag(log, interval(1e-4,1e-1))", Flt(1e-4, 0.1, log=True)),
        ("tag(log,interval(1,1024))", Int(1, 1024, log=True)),
        ("  interval(0.0,0.7)  ", Flt(0.0, 0.7)),  # YAML-ish surrounding blanks
    ],
)
def test_expression_maps_to_distribution(expr, expected):
    got = dist(expr)
    assert type(got) is type(expected)
    assert got == expected
    if isinstance(expected, (Flt, Int)):
        assert (got.low, got.high, got.step, got.log) == (expected.low, expected.high, expected.step, expected.log)


def test_choice_keeps_value_types():
    got = dist("choice(3, 2.5, true, 'x y', abc, '7')")
    assert got.choices == (3, 2.5, True, "x y", "abc", "7")
    assert [type(v) for v in got.choices] == [int, float, bool, str, str, str]


def test_interval_int_vs_float_types():
    assert isinstance(dist("interval(16,256)").low, int)
    d = dist("interval(0,1.5)")
    assert isinstance(d, Flt) and isinstance(d.low, float)


def test_float_range_excludes_stop_and_counts_in_decimal():
    d = dist("range(0,1,0.1)")  # 0.1 has no exact binary step -> categorical of the values
    assert isinstance(d, Cat)
    assert d.choices == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    # Hydra's own float accumulation would give 0.0, 0.3, 0.6, 0.8999999999999999 here
    assert dist("range(0,0.9,0.3)") == Flt(0.0, 0.6, step=0.3)
    assert parse_space({"a": "range(0,0.9,0.3)"}).grid() == {"a": [0.0, 0.3, 0.6]}
    assert dist("range(1,0,-0.5)") == Flt(0.5, 1.0, step=0.5)


def test_int_range_matches_python_range():
    for args in [(5, 30, 5), (0, 10, 3), (3, 4, 1), (20, 0, -7), (-5, 5, 2)]:
        d = dist(f"range({args[0]},{args[1]},{args[2]})")
        values = list(range(d.low, d.high + 1, d.step))
        assert sorted(values) == sorted(range(*args))


def test_plain_values_are_fixed():
    space = parse_space(
        {
            "train.momentum": 0.9,
            "train.epochs": 10,
            "train.patience": None,
            "data.download": False,
            "train.optimizer": "adam",
            "train.wd": "1e-4",  # a string in YAML: Hydra reads a float
            "train.flag": "true",
            "data.name": "'1'",  # quoted: stays a string
            "data.path": "'my data/u.data'",
            "model.hidden": "null",
        }
    )
    assert space.distributions == {}
    assert space.fixed == {
        "train.momentum": 0.9,
        "train.epochs": 10,
        "train.patience": None,
        "data.download": False,
        "train.optimizer": "adam",
        "train.wd": 1e-4,
        "train.flag": True,
        "data.name": "1",
        "data.path": "my data/u.data",
        "model.hidden": None,
    }


def test_order_and_split_from_yaml_dictconfig():
    cfg = OmegaConf.create(
        """
        model.k: choice(16,32,64,128,256)
        model.dropout: interval(0.0,0.7)
        train.lr: tag(log, interval(1e-4,1e-1))
        train.batch_size: choice(64,256,1024)
        train.momentum: 0.9
        train.epochs: range(5,30,5)
        train.optimizer: choice(sgd,adam)
        """
    )
    space = parse_space(cfg)
    assert list(space.distributions) == [
        "model.k", "model.dropout", "train.lr", "train.batch_size", "train.epochs", "train.optimizer"
    ]
    assert space.fixed == {"train.momentum": 0.9}
    assert space.distributions["train.lr"] == Flt(1e-4, 0.1, log=True)
    assert parse_space(None) == SearchSpace({}, {})
    assert parse_space({}) == SearchSpace({}, {})


# --------------------------------------------------------------------------- suggest / sampling

SPACE = {
    "model.k": "choice(16,32,64,128,256)",
    "model.dropout": "interval(0.0,0.7)",
    "model.hidden": "interval(8,64)",
    "train.lr": "tag(log, interval(1e-4,1e-1))",
    "train.epochs": "range(5,30,5)",
    "train.reg": "range(0,1,0.1)",
    "train.wd": "range(0,1,0.25)",
    "train.batch_size": "tag(log, range(16,65))",
    "train.optimizer": "choice(sgd,adam)",
    "train.momentum": 0.9,
}


def test_suggest_with_fixed_trial():
    space = parse_space(SPACE)
    chosen = {
        "model.k": 64, "model.dropout": 0.25, "model.hidden": 12, "train.lr": 0.003, "train.epochs": 15,
        "train.reg": 0.7, "train.wd": 0.5, "train.batch_size": 32, "train.optimizer": "adam",
    }
    params = space.suggest(optuna.trial.FixedTrial(chosen))
    assert params == {**chosen, "train.momentum": 0.9}
    assert list(params)[-1] == "train.momentum"


def test_random_sampling_stays_inside_the_space():
    space = parse_space(SPACE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = []

    def objective(trial):
        p = space.suggest(trial)
        seen.append(p)
        return p["train.lr"]

    study.optimize(objective, n_trials=50)
    assert len(seen) == 50
    for p in seen:
        assert p["model.k"] in (16, 32, 64, 128, 256)
        assert 0.0 <= p["model.dropout"] <= 0.7
        assert isinstance(p["model.hidden"], int) and 8 <= p["model.hidden"] <= 64
        assert 1e-4 <= p["train.lr"] <= 0.1
        assert p["train.epochs"] in (5, 10, 15, 20, 25)
        assert p["train.reg"] in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
        assert p["train.wd"] in (0.0, 0.25, 0.5, 0.75)
        assert 16 <= p["train.batch_size"] <= 64
        assert p["train.optimizer"] in ("sgd", "adam")
        assert p["train.momentum"] == 0.9
    assert {p["train.epochs"] for p in seen} == {5, 10, 15, 20, 25}
    assert study.best_trial.params.keys() == space.distributions.keys()


# --------------------------------------------------------------------------- grid


def test_grid_for_choice_and_range_runs_a_grid_study():
    space = parse_space(
        {"model.k": "choice(16,32)", "train.epochs": "range(5,20,5)", "train.wd": "range(0,1,0.5)",
         "train.lr": "interval(1,3)", "train.momentum": 0.9}
    )
    grid = space.grid()
    assert grid == {"model.k": [16, 32], "train.epochs": [5, 10, 15], "train.wd": [0.0, 0.5], "train.lr": [1, 2, 3]}
    study = optuna.create_study(sampler=optuna.samplers.GridSampler(grid, seed=0))
    combos = set()
    study.optimize(lambda t: len(combos.add(tuple(space.suggest(t).values())) or ()), n_trials=2 * 3 * 2 * 3)
    assert len(combos) == 36
    assert parse_space({"a": "range(0,1,0.1)"}).grid()["a"][7] == 0.7


def test_grid_rejects_a_continuous_interval():
    space = parse_space({"model.k": "choice(16,32)", "model.dropout": "interval(0.0,0.7)"}, where="sweep.space.plain")
    with pytest.raises(ConfigError, match=r"sweep\.space\.plain\.model\.dropout") as err:
        space.grid()
    assert "choice(" in str(err.value) and "range(" in str(err.value)


# --------------------------------------------------------------------------- as_overrides


def test_as_overrides_round_trips_through_hydra():
    space = parse_space(SPACE)
    params = {
        "model.k": 64, "train.lr": 1e-5, "model.dropout": 0.7000000000000001, "train.optimizer": "adam",
        "a.s1": "1", "a.s2": "true", "a.s3": "null", "a.s4": "x y", "a.s5": "it's", "a.s6": "a,b",
        "a.s7": "", "a.s8": "choice(1,2)", "a.s9": "back\\slash'", "a.b": False, "a.n": None, "a.f": 64.0,
        "a.inf": float("-inf"), "a.s10": "[1,2]", "a.s11": "${x}",
    }
    lines = space.as_overrides(params)
    assert lines[:4] == ["model.k=64", "train.lr=1e-05", "model.dropout=0.7000000000000001", "train.optimizer=adam"]
    parsed = OverridesParser.create().parse_overrides(lines)
    assert [o.key_or_group for o in parsed] == list(params)
    for o, (key, value) in zip(parsed, params.items()):
        assert type(o.value()) is type(value), key
        assert o.value() == value or (isinstance(value, float) and math.isnan(value)), key


def test_as_overrides_of_suggested_params():
    space = parse_space(SPACE)
    params = space.suggest(optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1)).ask())
    parsed = OverridesParser.create().parse_overrides(space.as_overrides(params))
    assert {o.key_or_group: o.value() for o in parsed} == params


def test_as_overrides_rejects_containers():
    with pytest.raises(ConfigError, match="model.k"):
        parse_space({}).as_overrides({"model.k": [1, 2]})


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "expr, problem",
    [
        ("choice(16,32", "viable"),
        ("choice()", "empty choice"),
        ("interval(0.1)", "interval"),
        ("interval(a,b)", "interval"),
        ("interval(1,1)", "low < high"),
        ("interval(0.7,0.0)", "low < high"),
        ("interval(0,inf)", "finite"),
        ("interval(true,2)", "true/false"),
        ("range(5,5)", "no values"),
        ("range(30,5,5)", "no values"),
        ("range(0,1,0)", "step"),
        ("range(0,inf)", "finite"),
        ("range(0,1e9,1e-9)", "too many"),
        ("tag(foo, interval(1,2))", "unknown tag"),
        ("tag(log, foo, interval(1,2))", "unknown tag"),
        ("tag(log, interval(0,1))", "low > 0"),
        ("tag(log, interval(-1.0,1.0))", "low > 0"),
        ("tag(log, choice(1,10))", "does not apply"),
        ("tag(log, range(1,100,2))", "step 1"),
        ("tag(log, range(0,10))", "low > 0"),
        ("tag(log, range(0.5,2,0.5))", "does not apply"),
        ("tag(log)", "tag"),
        ("[1,2]", "choice(1,2)"),
        ("{a:1}", "dict"),
        ("glob(*)", "glob"),
        ("choice([1,2],[3])", "choice values"),
        ("choice(1,true)", "distinct"),
        ("choice(a,a)", "distinct"),
        ("choice(1,2),3", "nested"),
        ("interval(0,1) junk", "expecting"),
        ("choice(1,2) # comment", "unexpected character"),
        ("a=b", "="),
        ("nosuch(1,2)", "nosuch"),
    ],
)
def test_bad_expression_is_a_config_error_naming_key_and_grammar(expr, problem):
    with pytest.raises(ConfigError) as err:
        parse_space({"model.k": expr}, where="sweep.space.plain")
    msg = str(err.value)
    assert "sweep.space.plain.model.k" in msg
    assert GRAMMAR_HINT in msg
    assert "choice(a,b,...)" in msg and "range(start,stop[,step]) (stop excluded)" in msg
    assert "tag(log, interval(low,high))" in msg and "plain value" in msg
    assert problem in msg
    assert "hydra.cc" not in msg and "\n" not in msg


@pytest.mark.parametrize("value, problem", [([1, 2], "choice(1,2)"), ({"k": "choice(1,2)"}, "dotted key")])
def test_yaml_list_or_mapping_value_is_rejected(value, problem):
    with pytest.raises(ConfigError, match=r"sweep\.space\.model\.k") as err:
        parse_space(OmegaConf.create({"model.k": value}))
    assert problem in str(err.value)


@pytest.mark.parametrize("key", ["+model.k", "~model.k", "model.k@pkg", "model k", "model..k", 3])
def test_bad_key_is_rejected(key):
    with pytest.raises(ConfigError, match="key"):
        parse_space({key: "choice(1,2)"})


# --------------------------------------------------------------------------- merge_space_overrides


def test_merge_narrows_adds_and_removes():
    base = OmegaConf.create(
        {"model.k": "choice(16,32,64,128,256)", "train.lr": 0.05, "model.dropout": "interval(0.0,0.7)"}
    )
    merged = merge_space_overrides(
        base,
        [
            "model.k=choice(32,64)",
            "+train.reg=tag(log,interval(1e-3,1))",
            "train.lr=tag(log, interval(1e-4,1e-1))",
            "~model.dropout",
            "++train.optimizer=choice(sgd,'my adam')",
            "++model.k=range(16,65,16)",
        ],
    )
    assert list(merged) == ["model.k", "train.lr", "train.reg", "train.optimizer"]
    space = parse_space(merged)
    assert space.distributions == {
        "model.k": Int(16, 64, step=16),
        "train.lr": Flt(1e-4, 0.1, log=True),
        "train.reg": Flt(1e-3, 1.0, log=True),
        "train.optimizer": Cat(["sgd", "my adam"]),
    }
    assert base["model.k"] == "choice(16,32,64,128,256)"  # input untouched


def test_merge_keeps_hydra_quoting():
    merged = merge_space_overrides({"data.name": "ml100k"}, ["data.name='1'", "+train.epochs=5"])
    assert parse_space(merged).fixed == {"data.name": "1", "train.epochs": 5}


@pytest.mark.parametrize(
    "override, problem",
    [
        ("model.kk=choice(1,2)", "+model.kk"),  # typo: not in the space, and no '+'
        ("+model.k=choice(1,2)", "already in the search space"),
        ("~train.nothing", "not in the search space"),
        ("model.k=choice(1,2", "choice(a,b,...)"),
        ("model.k@pkg=1", "@package"),
    ],
)
def test_merge_errors(override, problem):
    with pytest.raises(ConfigError) as err:
        merge_space_overrides({"model.k": "choice(16,32)"}, [override])
    assert problem in str(err.value)
    assert override.split("=")[0] in str(err.value)


def test_center_is_the_middle_of_each_key_on_its_step():
    space = parse_space({"model.k": "choice(16,32,64,128)", "train.lr": "tag(log, interval(1e-4, 1e-2))",
                         "model.dropout": "interval(0.0, 0.6)", "model.hidden": "interval(16,256)",
                         "train.epochs": "range(5,30,5)", "model.q": "range(0.0,1.0,0.25)",
                         "train.batch_size": "choice(512,1024)", "train.swa": "3"})
    center = space.center()
    assert center == {"model.k": 64, "train.lr": pytest.approx(1e-3), "model.dropout": pytest.approx(0.3),
                      "model.hidden": 136, "train.epochs": 15, "model.q": 0.5, "train.batch_size": 1024}
    assert type(center["model.hidden"]) is int and type(center["model.k"]) is int
    for key, dist in space.distributions.items():  # Optuna takes every value as is
        assert dist._contains(dist.to_internal_repr(center[key])), key
