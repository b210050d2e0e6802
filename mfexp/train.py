"""One training loop for every model: `fit`, with one epoch hook.

The hook (`on_epoch`) receives an `EpochReport` after each epoch; MLflow tracking and
Optuna pruning both see the epoch through it (a hook may raise to stop training, as
Optuna's TrialPruned does). Batches are slices of pre-shuffled NDArrays on the device:
no per-rating Python, one host synchronisation per `SYNC_EVERY` batches.
"""
from __future__ import annotations

import functools
import logging
import math
import os
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Optional

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon
from tqdm import tqdm

from mfexp import interrupt
from mfexp.config import Config, TrainConfig, parse_device
from mfexp.errors import ConfigError, TrainingDiverged
from mfexp.metrics import rmse
from mfexp.models import build_for_data

log = logging.getLogger("mfexp.train")

SYNC_EVERY = 256  # batches between divergence checks (each check waits for the device)
EVAL_BATCH = 1 << 16


@dataclass
class EpochReport:
    epoch: int  # 1-based
    train_rmse: float  # running RMSE over the epoch's batches (dropout active), as the tutorial's
    val_rmse: Optional[float]
    test_rmse: Optional[float]
    samples_per_sec: float
    epoch_time_s: float

    def metrics(self) -> dict[str, float]:
        names = ("train_rmse", "val_rmse", "test_rmse", "samples_per_sec", "epoch_time_s")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    def line(self, epochs: int) -> str:
        parts = [f"epoch {self.epoch}/{epochs}", f"train_rmse {self.train_rmse:.4f}"]
        if self.val_rmse is not None:
            parts.append(f"val_rmse {self.val_rmse:.4f}")
        if self.test_rmse is not None:
            parts.append(f"test_rmse {self.test_rmse:.4f}")
        parts += [f"{self.samples_per_sec / 1000:.0f}k samples/s", f"{self.epoch_time_s:.2f}s"]
        return "  ".join(parts)


@dataclass
class FitResult:
    history: list[EpochReport] = field(default_factory=list)
    best_epoch: int = 0  # the epoch with the lowest val RMSE (the last epoch without a holdout)
    best_val_rmse: Optional[float] = None  # the lowest val RMSE of any epoch (the sweep objective)
    final_val_rmse: Optional[float] = None  # of the returned weights
    final_test_rmse: Optional[float] = None  # of the returned weights
    stopped_early: bool = False


EpochHook = Callable[[EpochReport], None]


# Set in the process that trains on a GPU, before its first operator is created (MXNet reads it
# then, not at import). It only affects cuDNN convolutions, which these embedding models do not
# have: it keeps a future convolutional model from spending seconds autotuning every new shape.
GPU_ENV = {"MXNET_CUDNN_AUTOTUNE_DEFAULT": "0"}


def visible_gpus() -> int:
    """The GPUs MXNet sees: 0 with the CPU build (mxnet), and also with mxnet-cu112 on a host
    without an NVIDIA driver, or with a driver too old for CUDA 11.2."""
    try:
        return mx.context.num_gpus()
    except mx.base.MXNetError as err:
        raise ConfigError(f"MXNet could not count the GPUs ({str(err).strip().splitlines()[-1][:200]}). "
                          "Check the NVIDIA driver (nvidia-smi), or train on the CPU: train.device=cpu "
                          "(and sweep.devices=[] for sweeps).") from err


@functools.lru_cache(maxsize=1)
def _warn_gpu_build_without_gpu() -> None:
    if mx.runtime.Features().is_enabled("CUDA"):
        log.warning("train.device=auto: the GPU build of MXNet is installed but it sees no GPU, so this "
                    "trains on the CPU. nvidia-smi should list the GPUs; the driver must support CUDA 11.2.")


def resolve_device(device: str) -> tuple[mx.Context, str]:
    """train.device -> (the MXNet context, its name: 'cpu' or 'gpu:N'). 'auto' is the first GPU
    MXNet sees, else the CPU; asking for a GPU that MXNet does not see is a ConfigError."""
    kind, index = parse_device(device)
    if kind == "cpu":
        return mx.cpu(), "cpu"
    gpus = visible_gpus()
    if kind == "auto" and gpus == 0:
        _warn_gpu_build_without_gpu()
        return mx.cpu(), "cpu"
    if index >= gpus:
        raise ConfigError(f"train.device={device} asks for GPU {index} but MXNet sees {gpus} GPU(s) "
                          "(mx.context.num_gpus()). Use train.device=cpu or auto, or install "
                          "mxnet-cu112 on a CUDA 11.2 host (make install GPU=1).")
    for name, value in GPU_ENV.items():
        os.environ.setdefault(name, value)
    return mx.gpu(index), f"gpu:{index}"


def resolve_context(device: str) -> mx.Context:
    return resolve_device(device)[0]


def quiet_mxnet() -> None:
    """Say MXNet's "Optimizer with lazy_update = True detected ..." note once, to /dev/null.

    It is not a Python warning but a C++ LOG(INFO) that libmxnet writes to stderr once per engine
    thread (common::LogOnce, MXNet 1.9.1), in the middle of the first sparse-gradient trial. One
    tiny sparse SGD step with stderr pointed at /dev/null uses up that once for the CPU engine
    thread (one per process unless MXNET_CPU_WORKER_NTHREADS says more); no random numbers drawn."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        emb = gluon.nn.Embedding(2, 1, sparse_grad=True)
        emb.initialize(mx.init.Zero(), ctx=mx.cpu())
        trainer = gluon.Trainer(emb.collect_params(), "sgd", {"learning_rate": 0.1, "momentum": 0.9})
        with autograd.record():
            loss = emb(mx.nd.array([0])).sum()
        loss.backward()
        trainer.step(1)
        mx.nd.waitall()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def seed_everything(seed: int) -> None:
    mx.random.seed(seed)
    np.random.seed(seed)


def build_net(cfg: Config, data, ctx):
    """The configured network, seeded, initialized and hybridized on `ctx`."""
    seed_everything(cfg.train.seed)
    net = build_for_data(cfg.model, data, cfg.train.sparse_grad)
    net.initialize(mx.init.Uniform(cfg.train.init_scale), ctx=ctx)
    net.hybridize(static_alloc=True, static_shape=True)
    return net


def make_trainer(net: gluon.Block, cfg: TrainConfig):
    """What updates `net`'s parameters after each backward: `.step(batch_size)`. SGD (with or without
    momentum) and Adam, every sweep's optimizers, call MXNet's fused update operators directly
    (`FusedUpdate`: the same operators, arguments and states as gluon.Trainer, without its per-step
    Python, which cost more than the batch's forward and backward together); the other optimizers
    go through gluon.Trainer."""
    if cfg.optimizer in FusedUpdate.KINDS:
        return FusedUpdate(net.collect_params().values(), cfg)
    params = {"learning_rate": cfg.lr, "wd": cfg.wd}
    if cfg.optimizer in ("sgd", "nag", "signum"):
        params["momentum"] = cfg.momentum
    return gluon.Trainer(net.collect_params(), cfg.optimizer, params)


class FusedUpdate:
    """gluon.Trainer's step for SGD and Adam, without the Trainer: MXNet 1.9's own update operators
    (mxnet.optimizer.SGD / Adam call the same ones with the same arguments), so training follows the
    same result to the last bit (tested). One sgd(_mom)_update or adam_update per parameter, with
    MXNet's default lazy_update on row-sparse gradients (only the batch's rows): for dense SGD the
    Trainer's aggregated multi_sgd_mom_update takes about twice as long here as the per-parameter
    operator. Adam's bias correction is folded into its learning rate each step, as
    mxnet.optimizer.Adam does."""

    KINDS = ("sgd", "adam")
    BETA1, BETA2, EPSILON = 0.9, 0.999, 1e-8  # mxnet.optimizer.Adam's defaults

    def __init__(self, params, cfg: TrainConfig):
        self.cfg, self.t = cfg, 0
        self.params = [p for p in params if p.grad_req != "null"]
        self.momentum = cfg.momentum if cfg.optimizer == "sgd" else 0.0
        self.states: Optional[list] = None

    def _init_states(self) -> None:
        def zeros(w):
            return mx.nd.zeros(w.shape, ctx=w.context, dtype=w.dtype, stype=w.stype)
        weights = [p.data() for p in self.params]
        if self.cfg.optimizer == "adam":
            self.states = [(zeros(w), zeros(w)) for w in weights]
        else:
            self.states = [zeros(w) if self.momentum > 0 else None for w in weights]

    def step(self, batch_size: int) -> None:
        if self.states is None:
            self._init_states()
        self.t += 1
        cfg, rescale = self.cfg, 1.0 / batch_size
        weights = [p.data() for p in self.params]
        grads = [p.grad() for p in self.params]
        if cfg.optimizer == "adam":
            lr = cfg.lr * math.sqrt(1.0 - self.BETA2 ** self.t) / (1.0 - self.BETA1 ** self.t)
            for w, g, (mean, var) in zip(weights, grads, self.states):
                mx.nd.adam_update(w, g, mean, var, out=w, lazy_update=True, lr=lr, wd=cfg.wd,
                                  beta1=self.BETA1, beta2=self.BETA2, epsilon=self.EPSILON, rescale_grad=rescale)
            return
        for w, g, mom in zip(weights, grads, self.states):
            if mom is not None:
                mx.nd.sgd_mom_update(w, g, mom, out=w, lazy_update=True, lr=cfg.lr, wd=cfg.wd,
                                     momentum=self.momentum, rescale_grad=rescale)
            else:
                mx.nd.sgd_update(w, g, out=w, lazy_update=True, lr=cfg.lr, wd=cfg.wd, rescale_grad=rescale)


def _uses_time(net) -> bool:
    return bool(getattr(net, "uses_time", False))


def predict(net: gluon.Block, users: np.ndarray, items: np.ndarray, ctx: mx.Context,
            timestamps: Optional[np.ndarray] = None) -> np.ndarray:
    """Predictions for index pairs, in large batches (inference mode: dropout off). A model that
    reads the rating's day gets it from `timestamps`, else each user's last training day."""
    days = net.data.days_for(users, timestamps) if _uses_time(net) else None
    out = []
    for start in range(0, len(users), EVAL_BATCH):
        inputs = [users[start:start + EVAL_BATCH], items[start:start + EVAL_BATCH]]
        if days is not None:
            inputs.append(days[start:start + EVAL_BATCH])
        out.append(net(*(mx.nd.array(x, ctx=ctx) for x in inputs))[0].asnumpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def evaluate(net: gluon.Block, part, ctx: mx.Context, scale: Optional[tuple[float, float]] = None
             ) -> Optional[float]:
    """Exact RMSE over every rating of a data part, predictions clipped to the rating `scale`
    (as the logged MLflow model serves them); None for an empty part."""
    if part is None or len(part) == 0:
        return None
    pred = predict(net, part.users, part.items, ctx, part.timestamps)
    if scale is not None:
        pred = np.clip(pred, *scale)
    return rmse(part.ratings, pred)


def _snapshot(net: gluon.Block) -> dict[str, mx.nd.NDArray]:
    return {name: p.data().copy() for name, p in net.collect_params().items()}


def _average(snapshots) -> dict[str, mx.nd.NDArray]:
    """Stochastic weight averaging over a window of epoch-end weights (Izmailov et al. 2018)."""
    return {name: mx.nd.add_n(*(s[name] for s in snapshots)) / len(snapshots) for name in snapshots[0]}


def _restore(net: gluon.Block, snapshot: dict[str, mx.nd.NDArray]) -> None:
    for name, p in net.collect_params().items():
        p.set_data(snapshot[name])


def _step_forward(F, net, reg: float, batch, columns: int):
    """The per-rating loss and the batch's sum of squared errors, from (user, item, rating[, day]) rows."""
    cols = F.split(batch, num_outputs=columns, axis=1, squeeze_axis=True)
    u, i, y = cols[0], cols[1], cols[2]
    pred, sq = net(u, i, cols[3]) if columns == 4 else net(u, i)
    err = pred - y
    loss = 0.5 * F.square(err)  # LinearRegressionOutput's gradient, as the tutorial's
    if reg > 0:
        loss = loss + (0.5 * reg) * sq
    return loss, F.sum(F.square(F.stop_gradient(err)))


class _TrainStep(gluon.HybridBlock):
    """net + loss in one hybridized graph: one graph call per batch instead of a dozen small
    imperative ops."""

    def __init__(self, net: gluon.HybridBlock, reg: float, columns: int):
        super().__init__(prefix="")
        self.net, self.reg, self.columns = net, reg, columns

    def hybrid_forward(self, F, batch):
        return _step_forward(F, self.net, self.reg, batch, self.columns)


class _ImperativeStep(gluon.Block):
    """The same for a model that is a plain Block (sparse feature products run imperatively)."""

    def __init__(self, net: gluon.Block, reg: float, columns: int):
        super().__init__(prefix="")
        self.net, self.reg, self.columns = net, reg, columns

    def forward(self, batch):
        return _step_forward(mx.nd, self.net, self.reg, batch, self.columns)


def _progress(total: int, desc: str, enabled: bool):
    if not (enabled and sys.stderr.isatty()):
        return None

    return tqdm(total=total, desc=desc, unit="rating", unit_scale=True, leave=False, mininterval=0.25)


def epoch_order(train, group_by: str, rng: np.random.Generator, group_size: int = 0) -> np.ndarray:
    """One epoch's order of the training ratings (int32 positions). group_by none: a random
    permutation. user / item: each user's (item's) ratings next to each other, the users (items) in
    random order and the ratings within each in random order; with `group_size` > 0, each user's
    (item's) ratings in pieces of at most that many, the pieces in random order. Batches are cut
    from it as from any order (a piece may straddle two batches), so their shapes stay the same."""
    shuffled = rng.permutation(len(train))
    if group_by == "none" or not len(shuffled):
        return shuffled.astype(np.int32)
    keys = np.asarray(train.users if group_by == "user" else train.items)
    rank = rng.permutation(int(keys.max()) + 1)  # each group's place in the epoch
    order = shuffled[np.argsort(rank[keys[shuffled]], kind="stable")]
    if group_size > 0:
        k = keys[order]
        starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
        within = np.arange(len(k)) - np.repeat(starts, np.diff(np.r_[starts, len(k)]))
        piece = np.cumsum(within % group_size == 0) - 1
        order = order[np.argsort(rng.permutation(int(piece[-1]) + 1)[piece], kind="stable")]
    return order.astype(np.int32)


def fit(net: gluon.Block, data, cfg: TrainConfig, ctx: mx.Context, *, eval_test: bool = True,
        final_test: bool = True, on_epoch: Optional[EpochHook] = None) -> FitResult:
    """Train an initialized, hybridized `net` on `data.train`; evaluate on `data.val` (and
    `data.test` when `eval_test`) after each epoch, and the returned weights on `data.test` when
    `final_test` (sweep trials never look at the test part). With `cfg.patience`, stops when val RMSE
    has not improved for that many epochs and keeps the best epoch's weights. With `cfg.swa` > 1,
    every evaluation (and the returned weights) is of the average of the last `swa` epochs' weights,
    while training goes on from the raw ones."""
    train = data.train
    n = len(train)
    scale = (float(data.rating_min), float(data.rating_max))
    columns = 4 if _uses_time(net) else 3
    host = np.empty((n, columns), dtype=np.float32)  # (user, item, rating[, day]); ids < 2**24 are exact
    host[:, 0], host[:, 1], host[:, 2] = train.users, train.items, train.ratings
    if columns == 4:
        host[:, 3] = net.data.days(train.timestamps)
    rows = mx.nd.array(host, ctx=ctx)
    del host
    if isinstance(net, gluon.HybridBlock):
        step = _TrainStep(net, cfg.reg, columns)
        step.hybridize(static_alloc=True, static_shape=True)
    else:
        step = _ImperativeStep(net, cfg.reg, columns)
    trainer = make_trainer(net, cfg)
    rng = np.random.default_rng(cfg.seed)
    result, best = FitResult(), None
    since_best = 0
    window: deque = deque(maxlen=cfg.swa)  # train.swa > 1: the last epochs' weights, averaged
    raw = None
    for epoch in range(1, cfg.epochs + 1):
        if raw is not None:  # go on training from the raw weights, not their average
            _restore(net, raw)
        start = time.perf_counter()
        shuffled = rows.take(mx.nd.array(epoch_order(train, cfg.group_by, rng, cfg.group_size), ctx=ctx, dtype="int32"))
        sq_err, pending = 0.0, []  # the batches' squared errors, summed on the host at each sync
        bar = _progress(n, f"epoch {epoch}/{cfg.epochs}", cfg.progress)
        for lo in range(0, n, cfg.batch_size):
            interrupt.check()  # a Ctrl-C / SIGTERM whose KeyboardInterrupt an NDArray's __del__ swallowed
            hi = min(lo + cfg.batch_size, n)
            with autograd.record():
                loss, batch_sse = step(shuffled[lo:hi])
            loss.backward()
            trainer.step(hi - lo)
            pending.append(batch_sse)
            if bar is not None:
                bar.update(hi - lo)
            if len(pending) == SYNC_EVERY:
                sq_err += _sum(pending)
                pending = []
                _check_finite(sq_err, epoch, cfg)
        if bar is not None:
            bar.close()
        train_rmse = math.sqrt((sq_err + _sum(pending)) / n)
        _check_finite(train_rmse, epoch, cfg)
        elapsed = time.perf_counter() - start
        if cfg.swa > 1:
            raw = _snapshot(net)
            window.append(raw)
            _restore(net, _average(window))
        report = EpochReport(epoch, train_rmse, evaluate(net, data.val, ctx, scale),
                             evaluate(net, data.test, ctx, scale) if eval_test else None,
                             n / elapsed, elapsed)
        result.history.append(report)
        log.info(report.line(cfg.epochs))
        improved = report.val_rmse is not None and (
            result.best_val_rmse is None or report.val_rmse < result.best_val_rmse)
        if report.val_rmse is None or improved:
            result.best_epoch, result.best_val_rmse, since_best = epoch, report.val_rmse, 0
            if cfg.patience is not None:
                best = _snapshot(net)
        else:
            since_best += 1
        if on_epoch is not None:
            on_epoch(report)
        if cfg.patience is not None and since_best >= cfg.patience:
            result.stopped_early = True
            log.info("early stop: val_rmse has not improved for %d epochs; keeping epoch %d",
                     since_best, result.best_epoch)
            break
    if best is not None and result.best_epoch != result.history[-1].epoch:
        _restore(net, best)
        result.final_val_rmse = result.best_val_rmse
    else:
        result.final_val_rmse = result.history[-1].val_rmse
    result.final_test_rmse = evaluate(net, data.test, ctx, scale) if final_test else None
    return result


def _sum(values: list) -> float:
    """The sum of one-element NDArrays, with one operator and one wait for the device."""
    if not values:
        return 0.0
    return float(mx.nd.add_n(*values).asscalar()) if len(values) > 1 else float(values[0].asscalar())


def _check_finite(value: float, epoch: int, cfg: TrainConfig) -> None:
    if not math.isfinite(value):
        raise TrainingDiverged(
            f"training diverged: the loss became non-finite in epoch {epoch} "
            f"(train.optimizer={cfg.optimizer}, train.lr={cfg.lr}). Lower train.lr, or raise "
            "train.batch_size; the run is marked FAILED.")
