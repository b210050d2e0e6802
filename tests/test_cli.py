"""The command-line family (mfexp.run, mfexp.sweep, mfexp.data, mfexp.recommend): the same override
syntax, --help and --cfg job, and exit 2 with one line naming the key for anything the user must fix."""
from __future__ import annotations

import subprocess
import sys

import pytest

from mfexp.data.__main__ import main as data_main
from mfexp.recommend import main as recommend_main
from mfexp.run import main as run_main
from mfexp.sweep.__main__ import main as sweep_main


def _fails(main, argv, capsys) -> str:
    """Run a CLI's main in-process: it must exit 2 with one line on stderr and nothing on stdout."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    out, err = capsys.readouterr()
    assert exit_.value.code == 2, err
    assert err.startswith("mfexp: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and out == ""
    return err


USER_ERRORS = [
    ("trian.lr=0.1", "trian.lr is not a config key (did you mean train.lr?)"),
    ("+trian.lr=3", "trian.lr is not a config key (did you mean train.lr?)"),
    ("++train.lrr=3", "train.lrr is not a config key (did you mean train.lr?)"),
    ("model=mlpp", "model=mlpp: conf/model/ has no mlpp.yaml (did you mean model=mlp?)"),
    ("model.k=abc", "model.k: Value 'abc' of type 'str' could not be converted to Integer"),
    ("train.lr=abc", "train.lr: Value 'abc' of type 'str' could not be converted to Float"),
    ("+model.kk=3", "model.kk is not a setting of model._target_=mfexp.models.dot.DotProduct"),
    ("train.lr", "cannot parse an override (missing EQUAL"),
    ("--lr=3", "does not take '--lr=3'"),
]


@pytest.mark.parametrize("override,message", USER_ERRORS)
def test_run_exits_2_with_one_line_naming_the_key(override, message, capsys):
    err = _fails(run_main, [override], capsys)
    assert message in err and "use +" not in err


@pytest.mark.parametrize("override,message", [*USER_ERRORS, ("sweep=nope", "sweep=nope: conf/sweep/ has no nope.yaml"),
                                              ("sweep.samplr=tpe", "sweep.samplr is not a config key (did you "
                                                                   "mean sweep.sampler?)"),
                                              # the key exists (--cfg job lists it) but is an empty dict
                                              ("sweep.pruner_args={n_startup_trials:1}",
                                               "sweep.pruner_args cannot be set without '+': sweep.pruner_args is a "
                                               "dict of free keys, and Hydra adds a new key to it only with "
                                               "a '+' in front: write '+sweep.pruner_args=...'"),
                                              ("sweep.samplers.mine={_target_:pkg.Sampler}",
                                               "write '+sweep.samplers.mine=...'"),
                                              ("sweep.sampler_args.group=false",
                                               "write '+sweep.sampler_args.group=...'")])
def test_sweep_exits_2_with_one_line_naming_the_key(override, message, capsys):
    assert message in _fails(sweep_main, [override], capsys)


def test_run_cannot_use_the_sweep_group_and_its_help_does_not_list_it(capsys):
    assert "python -m mfexp.run has no config group 'sweep'" in _fails(run_main, ["sweep=smoke"], capsys)
    assert run_main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "model: autorec, biased, dropout, fm, mlp, plain, svdpp" in text and "--cfg job" in text
    assert "\n  sweep:" not in text and "Exit codes:" in text
    assert sweep_main(["--help"]) == 0
    assert "\n  sweep: default, long, smoke" in capsys.readouterr().out


def test_cfg_job_prints_the_composed_config_and_trains_nothing(tmp_path, monkeypatch, capsys):
    import yaml

    monkeypatch.chdir(tmp_path)
    assert run_main(["--cfg", "job", "model=mlp", "train.lr=0.01"]) == 0
    job = yaml.safe_load(capsys.readouterr().out)
    assert job["train"]["lr"] == 0.01 and job["model"]["hidden"] == 64 and "sweep" not in job
    assert sweep_main(["--cfg", "job", f"sweep.root={tmp_path}", "sweep=smoke", "model.k=choice(8,16)"]) == 0
    text = capsys.readouterr().out
    job = yaml.safe_load(text)  # the spaces follow as comments: still one YAML document
    assert job["sweep"]["name"] == "smoke" and job["sweep"]["models"] == ["plain", "biased"]
    assert "#   biased:\n" in text and "#     model.k: choice(8,16)\n" in text
    assert list(tmp_path.iterdir()) == []  # no store, no mlflow.db: nothing ran


def test_sweep_space_value_of_the_wrong_type_fails_before_any_trial(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    err = _fails(sweep_main, ["sweep=smoke", "model.k=choice(a,b)"], capsys)
    assert "sweep.space.plain.model.k = 'choice(a,b)' can give 'a', which does not fit" in err
    err = _fails(sweep_main, ["sweep=smoke", "train.lr=interval(-1,1)"], capsys)
    assert "train.lr must be > 0, got -1.0" in err
    assert list(tmp_path.iterdir()) == []


def test_recommend_reads_the_same_syntax(capsys):
    assert "usr is not a config key (did you mean user?)" in _fails(recommend_main, ["usr=1"], capsys)
    assert "user: Value 'abc' of type 'str' could not be converted to Integer" in _fails(recommend_main, ["user=abc"],
                                                                                        capsys)
    assert "n must be >= 1" in _fails(recommend_main, ["user=1", "n=0"], capsys)
    assert "give run_id= alone" in _fails(recommend_main, ["run_id=abc", "model=mlp", "user=1"], capsys)
    assert recommend_main(["--cfg", "job", "user=7", "sweep.name=mine"]) == 0
    text = capsys.readouterr().out
    assert "user: 7" in text and "name: mine" in text


def test_data_reads_the_same_syntax(capsys):
    assert "does not take '--split'" in _fails(data_main, ["info", "--split", "u1"], capsys)
    assert "data.split must be one of u1, u2, u3, u4, u5, got 'u9'" in _fails(data_main, ["info", "data.split=u9"],
                                                                            capsys)
    assert "reads only data.* keys" in _fails(data_main, ["info", "model=mlp"], capsys)
    assert "data=nope: conf/data/ has no nope.yaml" in _fails(data_main, ["info", "data=nope"], capsys)
    assert "export needs out=DIR" in _fails(data_main, ["export"], capsys)
    assert "say what to do" in _fails(data_main, ["data.split=u2"], capsys)
    assert data_main(["info", "--cfg", "job", "data.split=u3"]) == 0
    assert "split: u3" in capsys.readouterr().out


def test_exit_codes_seen_by_the_shell(tmp_path):
    """The real processes, as a shell sees them: 2 to fix, 0 for help."""
    def code(*args):
        return subprocess.run([sys.executable, "-m", *args], cwd=tmp_path, capture_output=True, text=True,
                              timeout=300).returncode

    assert code("mfexp.run", "trian.lr=0.1") == 2
    assert code("mfexp.sweep", "model=mlpp") == 2
    assert code("mfexp.data", "info", "data.split=u9") == 2
    assert code("mfexp.recommend", "user=abc") == 2
    assert code("mfexp.run", "--help") == 0


def test_mfexps_own_warnings_are_one_line_without_the_source_line(tmp_path):
    from pathlib import Path

    ratings = Path(__file__).parent / "fixtures" / "ratings_duplicates.csv"
    out = subprocess.run([sys.executable, "-m", "mfexp.data", "info", "data=file", f"data.path={ratings}"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stderr == (f"mfexp: warning: {ratings}: 3 duplicate (user, item) ratings; kept the last rating of "
                          "each pair.\n")
