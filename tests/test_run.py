"""mfexp.run end to end: the config round-trips into MLflow params, metrics per epoch, artifacts,
truthful statuses, and the CLI's exit codes and messages."""
from __future__ import annotations

import re
import subprocess
import sys

import mlflow
import pytest
import yaml

from mfexp.config import flatten
from mfexp.experiment import run
from pg import pg_database, postgres_server  # noqa: F401 - fixtures


def _finished_run(run_id):
    return mlflow.get_run(run_id)


def _checkout_commit() -> str:
    """The commit of the checkout under test, asked of git here; "unknown" only outside a git checkout."""
    from pathlib import Path

    import mfexp

    root = Path(mfexp.__file__).resolve().parents[1]
    if not (root / ".git").exists():  # a source archive: nothing to name
        return "unknown"
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=30,
                          check=True).stdout.strip()


def test_config_round_trips_into_mlflow_params_and_metrics(cfg, tiny_data, mlflow_uri):
    cfg.train.epochs = 3
    summary = run(cfg, data=tiny_data)
    logged = _finished_run(summary["run_id"])
    assert logged.info.status == "FINISHED"
    expected = {k: str(v) for k, v in flatten(cfg).items()}
    assert logged.data.params == expected
    client = mlflow.tracking.MlflowClient()
    for name in ("train_rmse", "val_rmse", "test_rmse", "samples_per_sec", "epoch_time_s"):
        steps = [m.step for m in client.get_metric_history(summary["run_id"], name)]
        assert steps == [1, 2, 3], name
    assert logged.data.metrics["final_test_rmse"] == pytest.approx(summary["test_rmse"])
    assert logged.data.tags["dataset"] == "synthetic" and logged.data.tags["split"] == "random"
    assert logged.data.tags["git_commit"] == _checkout_commit()
    artifacts = {a.path for a in client.list_artifacts(summary["run_id"])}
    assert "config.yaml" in artifacts
    config = yaml.safe_load(mlflow.artifacts.load_text(f"runs:/{summary['run_id']}/config.yaml"))
    assert config["model"]["k"] == cfg.model.k and config["train"]["lr"] == cfg.train.lr
    model_files = {a.path for a in client.list_artifacts(summary["run_id"], "model")}
    assert "model/MLmodel" in model_files


def test_a_diverging_run_ends_failed_never_finished_with_nan(cfg, tiny_data, mlflow_uri):
    from mfexp.errors import TrainingDiverged

    cfg.train.lr, cfg.train.epochs = 1e6, 2
    with pytest.raises(TrainingDiverged):
        run(cfg, data=tiny_data)
    runs = mlflow.search_runs(experiment_names=["mfexp"], output_format="list")
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "diverged" in runs[0].data.tags["mfexp.error"]


@pytest.mark.parametrize("text,shown", [
    ("postgresql://alice:s3cret@db.example/optuna", "postgresql://alice:***@db.example/optuna"),
    ("redis://:s3cret@host/0", "redis://:***@host/0"),  # a password without a user name
    ("http://:s3cret@host", "http://:***@host"),
    ("https://u:s3c@ret@host:5000/x", "https://u:***@host:5000/x"),  # urllib reads 's3c@ret' as the password
    ("postgresql://db.example/optuna?sslmode=require&password=s3cret", "postgresql://db.example/optuna?sslmode=require&password=***"),
    ("python -m mfexp.sweep 'sweep.storage=redis://:s3cret@h:6379/0' tracking.uri=http://bob:s3cret@h:5000",
     "python -m mfexp.sweep 'sweep.storage=redis://:***@h:6379/0' tracking.uri=http://bob:***@h:5000"),
    ("postgresql://alice@db.example/optuna and http://h:5000/#/x", "postgresql://alice@db.example/optuna and http://h:5000/#/x"),
])
def test_redact_hides_the_password_of_every_url_in_a_text(text, shown):
    from mfexp.track.tracker import redact

    assert redact(text) == shown


@pytest.mark.slow
@pytest.mark.parametrize("store", ["postgresql", "mlflow server"])
def test_a_password_in_the_tracking_url_reaches_nothing_a_run_writes(store, ratings_path, tmp_path, request):
    """mfexp.run with tracking.uri a URL that carries a password: a PostgreSQL store, or an `mlflow
    server` (http://user:password@..., sent as basic auth). Neither asks for it here (the throwaway
    PostgreSQL trusts 127.0.0.1, the server has no auth), but it is in the URL as a real one would
    be. The run is recorded there, and the password is in none of its rows, artifacts, files or
    console output."""
    import os
    import secrets

    from leaks import places_holding

    secret = secrets.token_hex(8)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    server = None
    if store == "postgresql":
        uri = request.getfixturevalue("pg_database")("run").replace("postgresql://postgres@",
                                                                    f"postgresql://postgres:{secret}@")
        store_uri = None
    else:
        from test_edges import MlflowServer

        (tmp_path / "server").mkdir()
        server = MlflowServer(tmp_path / "server").start()
        uri, store_uri = server.uri.replace("http://", f"http://alice:{secret}@"), f"sqlite:///{tmp_path / 'server' / 'mlflow.db'}"
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    try:
        out = subprocess.run([sys.executable, "-m", "mfexp.run", "data=file", f"data.path={ratings_path}",
                              "train.epochs=2", "train.batch_size=256", f"tracking.uri={uri}"],
                             capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        client = mlflow.tracking.MlflowClient(uri)
        runs = client.search_runs([client.get_experiment_by_name("mfexp").experiment_id])
        assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # recorded where the URL said
        assert runs[0].data.params["tracking.uri"] == uri.replace(secret, "***")
        found = places_holding(secret, root=tmp_path, tracking_uri=uri, store_uri=store_uri,
                               outputs={"stdout": out.stdout, "stderr": out.stderr})
    finally:
        if server is not None:
            server.stop()
    assert not found, "the password is in:\n" + "\n".join(found)


def test_a_url_whose_password_mfexp_hid_is_refused_naming_the_key(ratings_path, tmp_path, mlflow_uri):
    """A command or a best-<model>.yaml copied from mfexp's records has *** for the password."""
    out = _cli("data=file", f"data.path={ratings_path}", "tracking.uri=postgresql://bob:***@127.0.0.1:9/x", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "tracking.uri=postgresql://bob:***@127.0.0.1:9/x has *** where its password was" in out.stderr


@pytest.fixture
def ratings_path(tmp_path, tiny_data):
    parts = [tiny_data.train, tiny_data.val, tiny_data.test]
    lines = [f"{u + 1},{i + 1},{r:g}\n" for p in parts for u, i, r in zip(p.users, p.items, p.ratings)]
    path = tmp_path / "ratings.csv"
    path.write_text("user,item,rating\n" + "".join(lines))
    return path


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "mfexp.run", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_cli_trains_a_ratings_file_and_records_the_run(ratings_path, tmp_path, mlflow_uri):
    out = _cli("data=file", f"data.path={ratings_path}", "model=mlp", "model.k=8", "model.hidden=8",
               "train.epochs=2", "train.batch_size=256", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "done: model=mlp" in out.stdout and "epoch 2/2" in out.stdout
    runs = mlflow.search_runs(experiment_names=["mfexp"], output_format="list")
    assert len(runs) == 1 and runs[0].data.params["model.name"] == "mlp"


@pytest.mark.parametrize("override,key", [("model.k=0", "model.k"), ("model=dropout model.dropout=1.5", "model.dropout"),
                                          ("+model.kk=3", "model.kk is not a setting"),
                                          ("model=fm model.time=month", "model.time"),
                                          ("model._target_=nope.Net", "model._target_=nope.Net: cannot import"),
                                          ("train.lr=-1", "train.lr"), ("train.device=tpu", "train.device")])
def test_cli_bad_config_is_one_clear_line_and_exit_2(override, key, ratings_path, tmp_path, mlflow_uri, capsys):
    """In-process (test_cli's test_exit_codes_seen_by_the_shell runs the command itself): one line on
    stderr, exit 2, no run recorded."""
    from mfexp.run import main

    with pytest.raises(SystemExit) as exit_:
        main(["data=file", f"data.path={ratings_path}", *override.split()])
    out, err = capsys.readouterr()
    assert exit_.value.code == 2, err
    assert key in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err  # one line, nothing before or after it
    assert not mlflow.search_runs(experiment_names=["mfexp"], output_format="list")


def _started(ignoring_sigint: bool):
    """What the child starts with: SIGINT and SIGTERM at their defaults (from a terminal), or SIGINT
    ignored (started in the background of a script, or by a process that ignores it)."""
    import signal

    def preexec():
        signal.signal(signal.SIGINT, signal.SIG_IGN if ignoring_sigint else signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return preexec


@pytest.mark.parametrize("sig,ignoring_sigint", [("SIGTERM", False), ("SIGINT", True)],
                         ids=["SIGTERM", "SIGINT, started ignoring SIGINT"])
def test_a_signal_ends_a_run_killed_with_one_line_and_exit_130(sig, ignoring_sigint, ratings_path, tmp_path,
                                                              mlflow_uri):
    import os
    import signal
    import time

    client = mlflow.tracking.MlflowClient(mlflow_uri)
    client.search_experiments(max_results=1)  # the store's tables made here, not by two processes at once
    proc = subprocess.Popen([sys.executable, "-m", "mfexp.run", "data=file", f"data.path={ratings_path}",
                             "train.epochs=1000", "train.batch_size=16", "train.progress=false"],
                            cwd=tmp_path, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=_started(ignoring_sigint))
    try:
        deadline = time.monotonic() + 180
        while not (runs := _training_runs(client)):  # until an epoch is on record: it is training
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"the run never trained an epoch: {proc.communicate()[1][-3000:]}")
            time.sleep(0.5)
        proc.send_signal(getattr(signal, sig))
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-3000:]
    run_id = runs[0].info.run_id
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    ours = [line for line in err.splitlines() if line.startswith("mfexp")]  # MLflow's INFO lines aside
    assert len(ours) == 1 and err.splitlines()[-1] == ours[0], err
    assert re.fullmatch(rf"mfexp.run interrupted \({sig}\) after \d+s: its MLflow run {run_id} was marked KILLED\. "
                        r"Run the same command again to train it anew\.", ours[0]), ours[0]
    assert client.get_run(run_id).info.status == "KILLED"
    assert "done:" not in out and "epoch 1000/1000" not in out


def _training_runs(client):
    exp = client.get_experiment_by_name("mfexp")
    runs = client.search_runs([exp.experiment_id]) if exp else []
    return [r for r in runs if r.info.status == "RUNNING" and "val_rmse" in r.data.metrics]


def test_cli_missing_ratings_file_names_the_file(tmp_path, mlflow_uri):
    out = _cli("data=file", f"data.path={tmp_path / 'nope.csv'}", cwd=tmp_path)
    assert out.returncode == 2 and "nope.csv" in out.stderr and "Traceback" not in out.stderr


def test_a_ratings_file_with_four_items_trains_and_logs_its_model(cfg, tmp_path, mlflow_uri):
    """Fewer than 5 distinct items (the model's input example once took the first 5 item ids)."""
    path = tmp_path / "small.csv"
    path.write_text("1,1,5\n1,2,3\n2,1,4\n2,3,2\n3,2,1\n3,3,5\n4,1,3\n4,2,2\n4,4,4\n5,1,2\n5,3,4\n6,2,3\n")
    cfg.data.name, cfg.data.path, cfg.data.split = "file", str(path), "random"
    summary = run(cfg)
    assert mlflow.get_run(summary["run_id"]).info.status == "FINISHED"
    model = mlflow.pyfunc.load_model(f"runs:/{summary['run_id']}/model")
    import mxnet as mx
    import numpy as np
    import pandas as pd

    from mfexp.models import io as model_io
    from mfexp.train import predict

    users, items = np.array([1, 4, 2, 6]), np.array([2, 4, 3, 1])
    served = np.asarray(model.predict(pd.DataFrame({"user_id": users, "movie_id": items})))
    # the network's own outputs, from the logged parameters: served, they are clipped to the file's 1..5
    logged = model_io.load(mlflow.artifacts.download_artifacts(
        f"runs:/{summary['run_id']}/model/artifacts/mfexp_model", dst_path=str(tmp_path / "net")))
    raw = predict(logged.net, np.searchsorted(logged.user_ids, users), np.searchsorted(logged.item_ids, items),
                  mx.cpu())
    assert ((raw < 1) | (raw > 5)).any(), raw  # else clipping could not show here
    assert served == pytest.approx(np.clip(raw, 1, 5), abs=1e-5) and ((served >= 1) & (served <= 5)).all()


def test_data_too_small_to_split_is_a_data_error_exit_2(tmp_path, mlflow_uri):
    path = tmp_path / "two.csv"
    path.write_text("1,1,5\n2,1,3\n")
    out = _cli("data=file", f"data.path={path}", cwd=tmp_path)
    assert out.returncode == 2 and "two.csv holds only 2 distinct ratings" in out.stderr
    assert "Traceback" not in out.stderr
