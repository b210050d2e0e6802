"""Where training runs: train.device=auto and sweep.devices=auto with MXNet's GPU count mocked (0, 1,
4 GPUs), the GPU pieces a CPU can stand in for, and `make gpu-check` on a host without a GPU.

No GPU is exercised here. A second CPU context, mx.cpu(1), stands in for "the trial's device": a
hybridized network refuses inputs that live on another context, as it would on a GPU."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import mxnet as mx
import numpy as np
import pytest

from mfexp.errors import ConfigError
from mfexp.train import GPU_ENV, resolve_device

REPO = Path(__file__).resolve().parent.parent
AUTOTUNE = "MXNET_CUDNN_AUTOTUNE_DEFAULT"


def _config(*overrides):
    """The real config (conf/), shrunk as conftest's `cfg`, with the model chosen as a user does."""
    from hydra import compose, initialize_config_dir

    from mfexp import cli

    cli.register_schema()
    with initialize_config_dir(config_dir=cli.CONF_DIR, version_base="1.3"):
        return cli.to_object(compose(config_name="config", overrides=[
            "train.epochs=2", "train.progress=false", "train.batch_size=256", *overrides]))


@pytest.fixture(autouse=True)
def _gpu_env_restored(monkeypatch):
    """resolve_device sets GPU_ENV in os.environ when it picks a (mocked) GPU: undo it after each test."""
    monkeypatch.setenv(AUTOTUNE, "recorded")  # records the value before the test, restored after
    monkeypatch.delenv(AUTOTUNE)


@pytest.fixture
def gpus(monkeypatch):
    """gpus(n): MXNet reports n GPUs."""
    def set_count(n: int) -> None:
        monkeypatch.setattr(mx.context, "num_gpus", lambda: n)
    return set_count


# --- train.device --------------------------------------------------------------------------------
@pytest.mark.parametrize("count, device, ctx, name", [
    (0, "auto", mx.cpu(), "cpu"), (1, "auto", mx.gpu(0), "gpu:0"), (4, "auto", mx.gpu(0), "gpu:0"),
    (4, "gpu", mx.gpu(0), "gpu:0"), (4, "gpu:3", mx.gpu(3), "gpu:3"), (4, "cpu", mx.cpu(), "cpu")])
def test_train_device_resolves_against_the_gpus_mxnet_sees(gpus, count, device, ctx, name):
    gpus(count)
    assert resolve_device(device) == (ctx, name)


@pytest.mark.parametrize("count, device", [(0, "gpu"), (1, "gpu:1"), (4, "gpu:4")])
def test_a_gpu_mxnet_does_not_see_is_a_config_error(gpus, count, device):
    gpus(count)
    with pytest.raises(ConfigError, match=f"train.device={device} asks for GPU .* MXNet sees {count} GPU"):
        resolve_device(device)


def test_a_cuda_error_while_counting_gpus_names_the_way_out(monkeypatch):
    def broken():
        raise mx.base.MXNetError("CUDA: initialization error")
    monkeypatch.setattr(mx.context, "num_gpus", broken)
    with pytest.raises(ConfigError, match="train.device=cpu"):
        resolve_device("auto")
    assert resolve_device("cpu") == (mx.cpu(), "cpu")  # cpu never asks CUDA


def test_gpu_env_is_set_only_when_a_gpu_trains_and_never_over_the_users(gpus, monkeypatch):
    assert GPU_ENV == {AUTOTUNE: "0"}
    gpus(0)
    resolve_device("auto")
    assert AUTOTUNE not in os.environ
    gpus(1)
    resolve_device("auto")
    assert os.environ[AUTOTUNE] == "0"
    monkeypatch.setenv(AUTOTUNE, "1")
    resolve_device("gpu:0")
    assert os.environ[AUTOTUNE] == "1"


def test_the_default_config_trains_on_auto(cfg):
    assert cfg.train.device == "auto"


# --- sweep.devices -------------------------------------------------------------------------------
def _plan(ratings_file, tmp_path, *extra):
    from mfexp.sweep.plan import build_plan

    return build_plan(["data=file", f"data.path={ratings_file}", "sweep=smoke", f"sweep.root={tmp_path / 'sweeps'}",
                       "sweep.models=[biased]", "train.epochs=1", "train.batch_size=256", *extra])


@pytest.mark.parametrize("count, devices, workers, line", [
    (0, [], 1, "1 worker(s) on cpu"),
    (1, [0], 1, "1 worker(s) on gpu:0"),
    (4, [0, 1, 2, 3], 4, "4 worker(s) on gpu:0, gpu:1, gpu:2, gpu:3")])
def test_sweep_devices_auto_is_one_worker_per_visible_gpu(gpus, ratings_file, tmp_path, count, devices, workers, line):
    from mfexp.sweep.runner import _on_device, worker_device, workers_line

    gpus(count)
    plan = _plan(ratings_file, tmp_path)
    assert (plan.sweep.devices, plan.sweep.n_workers) == (devices, workers)
    assert workers_line(plan) == line
    for w in range(workers):
        moved = _on_device(plan.bases, worker_device(plan.sweep, w))
        assert moved["biased"].train.device == ("auto" if count == 0 else f"gpu:{w}")
    assert plan.bases["biased"].train.device == "auto"  # the replayed best trial stays portable


def test_on_a_cpu_host_sweep_n_workers_is_kept(gpus, ratings_file, tmp_path):
    from mfexp.sweep.runner import workers_line

    gpus(0)
    plan = _plan(ratings_file, tmp_path, "sweep.n_workers=3")
    assert (plan.sweep.devices, plan.sweep.n_workers, workers_line(plan)) == ([], 3, "3 worker(s) on cpu")


@pytest.mark.parametrize("extra, devices, line", [
    (["train.device=cpu"], [], "2 worker(s) on cpu"),       # an explicit train.device wins over auto
    (["sweep.devices=[]"], [], "2 worker(s) on gpu:0"),     # no per-worker GPU: all on train.device
    (["sweep.devices=[1,3]"], [1, 3], "2 worker(s) on gpu:1, gpu:3")])
def test_explicit_devices_on_a_four_gpu_host(gpus, ratings_file, tmp_path, extra, devices, line):
    from mfexp.sweep.runner import workers_line

    gpus(4)
    plan = _plan(ratings_file, tmp_path, "sweep.n_workers=2", *extra)
    assert plan.sweep.devices == devices and workers_line(plan) == line


@pytest.mark.parametrize("value, match", [("sweep.devices=gpu", "sweep.devices must be auto or a list"),
                                          ("sweep.devices=[0,0]", "sweep.devices must be auto or a list"),
                                          ("sweep.devices=[2]", "MXNet sees 1 GPU")])
def test_bad_sweep_devices_are_config_errors(gpus, ratings_file, tmp_path, value, match):
    gpus(1)
    with pytest.raises(ConfigError, match=match):
        _plan(ratings_file, tmp_path, value)


@pytest.mark.slow
def test_the_sweep_says_where_it_trains_and_each_run_is_tagged(ratings_file, tmp_path, mlflow_uri, capsys):
    from mfexp.sweep.orchestrate import run_sweep

    run_sweep(_plan(ratings_file, tmp_path, "sweep.n_trials=1"))
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("sweep smoke:") and first.endswith(", 1 worker(s) on cpu")
    runs = mlflow.search_runs([mlflow.get_experiment_by_name("mfexp-sweep-smoke").experiment_id],
                              output_format="list")
    trained = [r for r in runs if "optuna.trial_number" in r.data.tags]  # the trial and its best replay
    assert len(trained) == 2 and {r.data.tags["mfexp.device"] for r in trained} == {"cpu"}


# --- the GPU pieces, as far as a CPU goes -----------------------------------------------------------
def test_a_cpu_run_gives_the_numbers_it_gave_before_auto(tiny_data):
    """Golden values: biased on the synthetic set, 2 epochs, trained at 9e6ac89 with train.device=cpu
    (the default before auto). train.device=auto on a CPU host must give them: bit for bit on one
    CPU; to 1e-9 relative across CPUs, whose vector widths change the order of numpy's float64 sums
    of squared errors (a CI machine differed at the tenth digit of one RMSE), far below a float32
    model's resolution (1e-7), so any change in what was trained or predicted still shows."""
    from mfexp.train import build_net
    from mfexp.train import fit

    cfg = _config("model=biased")
    ctx, name = resolve_device(cfg.train.device)
    assert (cfg.train.device, name) == ("auto", "cpu")
    result = fit(build_net(cfg, tiny_data, ctx), tiny_data, cfg.train, ctx)
    got = [x for h in result.history for x in (h.train_rmse, h.val_rmse, h.test_rmse)]
    assert got == pytest.approx([1.1503113761459434, 1.1828628249293247, 1.1097289898587686,
                                 1.1344160448595662, 1.1645632188576769, 1.0946367536554646], rel=1e-9, abs=0)


def test_the_device_stand_in_refuses_inputs_from_another_context(cfg, tiny_data):
    from mfexp.train import build_net

    net = build_net(cfg, tiny_data, mx.cpu(1))
    with pytest.raises(mx.base.MXNetError, match="same context"):
        net(mx.nd.array([0, 1]), mx.nd.array([0, 1]))  # on cpu(0), the default


def test_batches_live_on_the_device_with_no_host_copy_per_batch(tiny_data, monkeypatch):
    """fit on mx.cpu(1): every batch must be on the net's context (else the cached graph raises), and
    device->host reads and host->device arrays stay a handful per epoch, not one per batch."""
    from mfexp.train import build_net
    from mfexp.train import fit

    cfg = _config("model=mlp", "train.batch_size=8")
    net = build_net(cfg, tiny_data, mx.cpu(1))
    counts = {"to_host": 0, "to_device": 0}
    to_host, to_device = mx.nd.NDArray.asnumpy, mx.nd.array

    def counted_to_host(self):
        counts["to_host"] += 1
        return to_host(self)

    def counted_to_device(*args, **kwargs):
        counts["to_device"] += 1
        return to_device(*args, **kwargs)

    monkeypatch.setattr(mx.nd.NDArray, "asnumpy", counted_to_host)
    monkeypatch.setattr(mx.nd, "array", counted_to_device)
    result = fit(net, tiny_data, cfg.train, mx.cpu(1))
    batches = 2 * -(-len(tiny_data.train) // 8)
    assert batches > 500 and np.isfinite(result.final_test_rmse)
    assert counts["to_host"] <= 10 and counts["to_device"] <= 14, counts
    assert all(p.list_ctx() == [mx.cpu(1)] for p in net.collect_params().values())


def test_a_model_trained_on_another_context_is_logged_and_served_on_the_cpu(cfg, tiny_data, tmp_path, mlflow_uri,
                                                                         monkeypatch):
    """A run whose device resolves to mx.cpu(1) (standing in for gpu:0): its logged MLflow model loads
    on cpu(0), as on a serving host without a GPU (a net left on cpu(1) would refuse cpu(0) inputs),
    and predicts what the same model predicts on the device."""
    import mfexp.experiment
    import ops.gpu_check
    from ops.gpu_check import check_serving

    for module in (mfexp.experiment, ops.gpu_check):  # where the run and the check look it up
        monkeypatch.setattr(module, "resolve_device", lambda device: (mx.cpu(1), "cpu:1"))
    check = check_serving(cfg, tiny_data, "auto", tmp_path)
    assert check.ok, check.line()
    assert "trained on cpu:1; predictions served on cpu vs on cpu:1: max diff 0.0e+00" in check.detail


def test_a_logged_model_requires_the_installed_mxnet_build(monkeypatch):
    import importlib.metadata as md

    from mfexp.track.tracker import _requirements

    assert _requirements()[0] == f"mxnet=={md.version('mxnet')}"  # this host: the CPU build
    installed = {"mxnet-cu112": "1.9.1", "numpy": "1.23.5", "pandas": "2.0.3", "mlflow": "3.1.0"}

    def version(dist):
        if dist not in installed:
            raise md.PackageNotFoundError(dist)
        return installed[dist]

    monkeypatch.setattr(md, "version", version)
    reqs = _requirements()
    assert reqs[0] == "mxnet-cu112==1.9.1" and not any(r.startswith("mxnet==") for r in reqs)


# --- make gpu-check ----------------------------------------------------------------------------
def test_gpu_check_without_a_gpu_exits_2_with_one_line():
    out = subprocess.run([sys.executable, "-m", "ops.gpu_check"], capture_output=True, text=True, cwd=REPO,
                         timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu-check: MXNet sees no GPU on this host")
    assert "make install GPU=1" in lines[0]


def test_gpu_check_covers_every_configured_model():
    from ops.gpu_check import models

    assert set(models()) >= {"plain", "mlp", "dropout", "biased"}
    assert models() == sorted(p.stem for p in (REPO / "conf" / "model").glob("*.yaml"))


def test_gpu_check_training_compares_the_device_with_the_host(cfg, tiny_data, monkeypatch):
    import ops.gpu_check as gc

    check = gc.check_training(cfg, tiny_data, mx.cpu(1), mx.cpu(), "tutorial")
    assert check.ok and "diff 0.0e+00" in check.detail and "rerun diff 0.0e+00" in check.detail
    assert check.line().startswith("ok    train plain tutorial")
    monkeypatch.setattr(gc, "TOLERANCE", -1.0)
    assert not gc.check_training(cfg, tiny_data, mx.cpu(1), mx.cpu(), "tutorial").ok


def test_gpu_check_serving_loads_an_auto_run_on_the_cpu(cfg, tiny_data, tmp_path, mlflow_uri):
    from ops.gpu_check import check_serving

    check = check_serving(cfg, tiny_data, "auto", tmp_path)
    assert check.ok, check.line()
    assert check.detail.startswith("trained on cpu; predictions served on cpu vs on cpu: max diff 0.0e+00")
    assert "requirements name mxnet==" in check.detail


def test_gpu_check_auto_line_with_four_gpus(gpus, ratings_file, tmp_path):
    from ops.gpu_check import check_auto

    gpus(4)
    check = check_auto(["data=file", f"data.path={ratings_file}"], 4, tmp_path)
    assert check.ok and check.detail == ("train.device=auto -> gpu:0; sweep.devices=auto -> "
                                         "4 worker(s) on gpu:0, gpu:1, gpu:2, gpu:3")


@pytest.mark.slow
def test_gpu_check_two_gpu_sweep_fails_plainly_without_gpus(ratings_file, tmp_path):
    """The sweep's command composes (every override is a real key); on this host it stops on the GPU count."""
    from ops.gpu_check import check_two_gpu_sweep

    check = check_two_gpu_sweep(["data=file", f"data.path={ratings_file}"], tmp_path)
    assert not check.ok and "exit 2" in check.detail and "MXNet sees 0 GPU" in check.detail
