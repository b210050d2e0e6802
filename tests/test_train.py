"""The training loop: same seed same numbers, early stopping, divergence, the epoch hook."""
import math

import mxnet as mx
import pytest

from mfexp.config import TrainConfig
from mfexp.errors import ConfigError, TrainingDiverged
from mfexp.models import ModelData, build_model
from mfexp.models.plugins import named
from mfexp.train import evaluate, fit, resolve_context


def _train(data, **train):
    mx.random.seed(train.get("seed", 0))
    net = build_model(named("biased", k=4), ModelData(data.n_users, data.n_items, data.global_mean))
    net.initialize(mx.init.Uniform(0.1))
    net.hybridize(static_alloc=True, static_shape=True)
    cfg = TrainConfig(**{"optimizer": "adam", "lr": 0.01, "wd": 0.0, "batch_size": 128, "epochs": 3,
                         "progress": False, **train})
    return net, fit(net, data, cfg, mx.cpu())


def test_same_seed_same_numbers(tiny_data):
    _, a = _train(tiny_data)
    _, b = _train(tiny_data)
    assert [r.metrics()["val_rmse"] for r in a.history] == [r.metrics()["val_rmse"] for r in b.history]
    assert a.final_test_rmse == b.final_test_rmse
    _, c = _train(tiny_data, seed=1)
    assert c.final_test_rmse != a.final_test_rmse


def test_epoch_hook_sees_every_epoch_and_can_stop_training(tiny_data):
    seen = []

    class Stop(Exception):
        pass

    def hook(report):
        seen.append(report.epoch)
        if report.epoch == 2:
            raise Stop

    mx.random.seed(0)
    net = build_model(named("plain", k=4), ModelData(tiny_data.n_users, tiny_data.n_items))
    net.initialize(mx.init.Uniform(0.1))
    with pytest.raises(Stop):
        fit(net, tiny_data, TrainConfig(epochs=5, progress=False), mx.cpu(), on_epoch=hook)
    assert seen == [1, 2]


def test_early_stopping_keeps_the_best_epochs_weights(tiny_data):
    # A high learning rate overfits fast: val RMSE turns up, and training stops.
    net, result = _train(tiny_data, lr=0.05, epochs=40, patience=2)
    assert result.stopped_early
    assert len(result.history) == result.best_epoch + 2
    best = min(r.val_rmse for r in result.history)
    assert result.best_val_rmse == best
    assert evaluate(net, tiny_data.val, mx.cpu(), (1.0, 5.0)) == pytest.approx(best, rel=1e-6)
    assert result.final_val_rmse == best


@pytest.mark.parametrize("batch_size", [1000, 8])  # 8: more batches than one SYNC_EVERY, and a remainder
def test_exact_rmse_counts_every_rating_the_last_partial_batch_too(tiny_data, batch_size):
    """RMSEs are over every rating, computed here by hand from the network's own predictions."""
    import numpy as np

    from mfexp.train import SYNC_EVERY

    # lr ~ 0: the weights stay put, so the epoch's train RMSE is the initial network's over all ratings
    net, result = _train(tiny_data, optimizer="sgd", lr=1e-12, momentum=0.0, batch_size=batch_size, epochs=1)
    assert len(tiny_data.train) % batch_size != 0  # a last, partial batch exists
    if batch_size == 8:
        assert SYNC_EVERY < len(tiny_data.train) // batch_size < 2 * SYNC_EVERY

    def by_hand(part, clip):
        pred = net(mx.nd.array(part.users), mx.nd.array(part.items))[0].asnumpy().astype(np.float64)
        if clip:  # val and test are scored as the logged model serves: clipped to the rating scale
            pred = np.clip(pred, tiny_data.rating_min, tiny_data.rating_max)
        errors = [(p - float(y)) ** 2 for p, y in zip(pred, part.ratings)]
        return math.sqrt(sum(errors) / len(errors))

    epoch = result.history[0]
    assert epoch.train_rmse == pytest.approx(by_hand(tiny_data.train, clip=False), rel=1e-5)
    assert epoch.val_rmse == pytest.approx(by_hand(tiny_data.val, clip=True), rel=1e-6)
    assert result.final_test_rmse == pytest.approx(by_hand(tiny_data.test, clip=True), rel=1e-6)


@pytest.mark.parametrize("optimizer,momentum,wd,sparse", [
    ("sgd", 0.9, 1e-4, False), ("sgd", 0.9, 1e-4, True), ("sgd", 0.0, 1e-3, False), ("sgd", 0.0, 0.0, True),
    ("adam", 0.0, 0.0, True), ("adam", 0.0, 1e-3, False)])
def test_the_fused_update_trains_as_gluons_trainer_does(tiny_data, optimizer, momentum, wd, sparse):
    """make_trainer's FusedUpdate against gluon.Trainer with the same optimizer: the same weights after
    several steps of uneven batches, dense and row-sparse gradients (plain SGD within rounding: MXNet's
    Trainer takes multi_sgd_update there, the per-parameter operator rounds once differently)."""
    import numpy as np
    from mxnet import autograd, gluon

    from mfexp.train import FusedUpdate, make_trainer

    cfg = TrainConfig(optimizer=optimizer, lr=0.05 if optimizer == "sgd" else 0.01, momentum=momentum, wd=wd)
    users, items = mx.nd.array(tiny_data.train.users[:300]), mx.nd.array(tiny_data.train.items[:300])
    ratings = mx.nd.array(tiny_data.train.ratings[:300])
    finals = []
    for fused in (True, False):
        mx.random.seed(0)
        net = build_model(named("biased", k=4), ModelData(tiny_data.n_users, tiny_data.n_items, tiny_data.global_mean),
                          sparse_grad=sparse)
        net.initialize(mx.init.Uniform(0.1))
        if fused:
            trainer = make_trainer(net, cfg)
            assert isinstance(trainer, FusedUpdate)
        else:
            args = {"learning_rate": cfg.lr, "wd": cfg.wd, **({"momentum": momentum} if optimizer == "sgd" else {})}
            trainer = gluon.Trainer(net.collect_params(), optimizer, args)
        for lo, hi in [(0, 64), (64, 128), (128, 192), (192, 256), (256, 300)]:
            with autograd.record():
                pred, _ = net(users[lo:hi], items[lo:hi])
                loss = mx.nd.square(pred - ratings[lo:hi])
            loss.backward()
            trainer.step(hi - lo)
        finals.append({name[name.index("_") + 1:]: p.data().asnumpy() for name, p in net.collect_params().items()})
    assert finals[0].keys() == finals[1].keys()
    for name in finals[0]:
        np.testing.assert_allclose(finals[0][name], finals[1][name], rtol=0, atol=1e-7 if (optimizer, momentum) == ("sgd", 0.0) else 0)


def test_divergence_stops_the_run_with_a_message(tiny_data):
    with pytest.raises(TrainingDiverged, match="train.lr"):
        _train(tiny_data, optimizer="sgd", lr=1e6, momentum=0.9, epochs=3)


def test_gpu_request_without_a_gpu_is_a_clear_error():
    if mx.context.num_gpus() > 0:
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match="train.device=gpu:1"):
        resolve_context("gpu:1")
    assert resolve_context("auto") == mx.cpu()


def test_swa_returns_the_average_of_the_last_epochs_weights(tiny_data):
    # Training goes on from the raw weights, so epoch e's raw weights are those of a plain e-epoch run.
    one, _ = _train(tiny_data, epochs=1)
    two, _ = _train(tiny_data, epochs=2)
    avg, result = _train(tiny_data, epochs=2, swa=2)
    params = lambda net: net._collect_params_with_prefix()  # noqa: E731  structural names, not instance prefixes
    for name, p in params(avg).items():
        want = (params(one)[name].data() + params(two)[name].data()) / 2
        assert p.data().asnumpy() == pytest.approx(want.asnumpy(), abs=1e-6), name
    assert result.history[-1].val_rmse == pytest.approx(evaluate(avg, tiny_data.val, mx.cpu(), (1.0, 5.0)))
    assert result.history[-1].val_rmse != _train(tiny_data, epochs=2)[1].history[-1].val_rmse


def test_a_signal_whose_interrupt_a_del_swallowed_still_stops_training(tiny_data, monkeypatch):
    """Python runs a signal handler wherever the main thread is, also inside a __del__ (MXNet frees
    NDArrays in one): the KeyboardInterrupt goes to sys.unraisablehook (printed as 'Exception
    ignored') and is dropped. The hook install() sets keeps it quiet (the command's last line stays
    its own), and the training loop still stops at its next batch."""
    import gc
    import os
    import signal
    import sys

    from mfexp import interrupt

    monkeypatch.setattr(interrupt, "_pending", [])
    dropped = []
    monkeypatch.setattr(sys, "unraisablehook", dropped.append)  # where Python sends "Exception ignored"
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    class SignalledWhileFreed:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here, inside __del__

    class CutWhileBuilt:  # an NDArray whose constructor the signal cut before it had its handle
        def __init__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            self.handle = 1

        def __del__(self):
            assert self.handle

    class FailsWhileFreed:
        def __del__(self):
            raise ValueError("not a signal")

    try:
        interrupt.install()
        gc.disable()  # so that the object is freed here, by its refcount, and nowhere else
        SignalledWhileFreed()
        gc.enable()
        assert sys.unraisablehook is interrupt._unraisable and dropped == []  # lost, as in CI, and not printed
        try:
            CutWhileBuilt()
        except KeyboardInterrupt:
            pass  # the half-built object is freed here; its __del__'s AttributeError is not printed
        assert dropped == []
        FailsWhileFreed()
        assert [type(d.exc_value) for d in dropped] == [ValueError]  # any other error is reported as before
        assert interrupt.pending() == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt, match="signal 15"):
            _train(tiny_data, epochs=50)
    finally:
        gc.enable()
        for s, h in old.items():
            signal.signal(s, h)


def test_a_signal_during_a_database_store_call_stops_the_process_only_once_the_call_is_whole(monkeypatch, mlflow_uri):
    """A Ctrl-C / SIGTERM torn into MLflow's SQL transaction left the connection holding SQLite's lock,
    and the trial's FAIL tag waited on it for ever (CI). The store call now runs whole; the
    KeyboardInterrupt comes right after it, and a second signal during it raises at once."""
    import os
    import signal

    import mlflow

    from mfexp import interrupt
    from mfexp.config import TrackingConfig
    from mfexp.track.tracker import Tracker

    monkeypatch.setattr(interrupt, "_pending", [])
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    finished = []

    def signalled_set_tags(tags, times=1):
        for _ in range(times):
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here, in the middle of the call
        finished.append(tags)
        return real(tags)

    real = mlflow.set_tags
    try:
        interrupt.install()
        tracker = Tracker(TrackingConfig(experiment="deferred"))
        with tracker.run(run_name="r", params={}, tags={}):
            monkeypatch.setattr(mlflow, "set_tags", signalled_set_tags)
            with pytest.raises(KeyboardInterrupt, match="signal 15"):
                tracker.set_tags({"a": "1"})
            assert finished == [{"a": "1"}]  # the call ran to its end, then the interrupt came
            assert mlflow.get_run(tracker.run_id).data.tags["a"] == "1"
            monkeypatch.setattr(mlflow, "set_tags", lambda tags: signalled_set_tags(tags, times=2))
            with pytest.raises(KeyboardInterrupt):
                tracker.set_tags({"b": "2"})  # a second signal: at once, a way out of a hung call
            assert finished == [{"a": "1"}]
            monkeypatch.setattr(mlflow, "set_tags", real)
            interrupt._pending.clear()
        assert mlflow.get_run(tracker.run_id).info.status == "FINISHED"  # the store answers: no lock left
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@pytest.mark.parametrize("group_by", ["user", "item"])
def test_grouped_epochs_keep_each_group_together_and_shuffle_the_groups(tiny_data, group_by):
    import numpy as np

    from mfexp.train import epoch_order

    train = tiny_data.train
    keys = np.asarray(train.users if group_by == "user" else train.items)
    orders = [epoch_order(train, group_by, np.random.default_rng(seed)) for seed in (0, 0, 1)]
    assert sorted(orders[0]) == list(range(len(train)))  # every rating once
    np.testing.assert_array_equal(orders[0], orders[1])  # same seed, same order
    runs = keys[orders[0]]
    starts = np.flatnonzero(np.r_[True, runs[1:] != runs[:-1]])
    assert len(starts) == len(np.unique(keys))  # each group in one piece
    assert not np.array_equal(keys[orders[0]], keys[orders[2]])  # groups in another order under another seed
    assert not np.array_equal(keys[orders[0]], np.sort(keys))  # not in id order
    ungrouped = keys[epoch_order(train, "none", np.random.default_rng(0))]
    assert np.count_nonzero(ungrouped[1:] != ungrouped[:-1]) > 2 * len(starts)


def test_batches_grouped_by_user_give_svdpp_few_rows_per_batch_and_the_same_products(tiny_data):
    """With group_by=user a batch holds a few users: svdpp's implicit block takes its batch-rows path."""
    import numpy as np

    from mfexp.data.features import implicit_feedback
    from mfexp.models.layers import SparseBlock
    from mfexp.train import epoch_order

    train = tiny_data.train
    block = SparseBlock(implicit_feedback(train.users, train.items, tiny_data.n_users, tiny_data.n_items)[0])
    grouped = train.users[epoch_order(train, "user", np.random.default_rng(0))][:64]
    random = train.users[epoch_order(train, "none", np.random.default_rng(0))][:64]
    assert block.batch_rows(mx.nd.array(grouped)) and not block.batch_rows(mx.nd.array(random))


def test_grouped_epochs_in_pieces_keep_at_most_that_many_of_a_group_together(tiny_data):
    import numpy as np

    from mfexp.train import epoch_order

    train = tiny_data.train
    order = epoch_order(train, "user", np.random.default_rng(0), group_size=4)
    assert sorted(order) == list(range(len(train)))
    runs = train.users[order]
    starts = np.flatnonzero(np.r_[True, runs[1:] != runs[:-1]])
    lengths = np.diff(np.r_[starts, len(runs)])
    assert lengths.max() <= 8  # two pieces of one user may meet, by chance, but rarely more
    assert np.mean(lengths <= 4) > 0.9
    per_user = np.bincount(train.users)
    assert len(starts) >= np.ceil(per_user[per_user > 0] / 4).sum() * 0.9  # about every piece apart
