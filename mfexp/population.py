"""Populations: several trials of one model trained at once, as one network.

A model whose trainable parameters are all tables indexed by user or item id (`Recommender.population`:
plain and biased MF) can hold P members side by side: each table gets P times the rows, member m's
ids are offset by m times the table's rows, and one forward pass, one backward pass and one
optimizer update per batch serve every member. MXNet's fixed cost per batch (graph calls, optimizer
dispatch, host syncs) is then paid once for P trials; the arithmetic per rating is not shared, so
the gain is largest at small batches (BENCHMARKS.md, trial_cost).

Per member: train.lr, train.wd, train.reg and train.init_scale. Shared (the population's `key`):
the model's settings, the optimizer (and SGD's momentum), the batch size, the batch order
(train.seed, train.group_by), the epochs, patience, swa, sparse_grad and the device.

Members that share lr and wd train with MXNet's own optimizer, exactly as alone; otherwise each
row's lr and wd enter MXNet's fused sgd_mom_update / adam_update (lazy on row-sparse gradients, as
MXNet's default) as `_Optimizer` says. Each member starts from exactly the weights its lone run
starts from (built alone, seeded, then copied in), sees the same batches, and ends where its lone
run ends to float rounding: tests/test_population.py states and checks the tolerance. A member that
is pruned (its hook raises), stops early or diverges leaves the population at that epoch: the next
epoch's graph no longer computes it.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Sequence

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from mfexp import interrupt
from mfexp.config import Config
from mfexp.errors import TrainingDiverged
from mfexp.metrics import rmse
from mfexp.models.base import ModelData
from mfexp.train import (SYNC_EVERY, EpochReport, FitResult, FusedUpdate, _check_finite, epoch_order, evaluate,
                          make_trainer, predict)

OPTIMIZERS = ("sgd", "adam")
PER_MEMBER = ("train.lr", "train.wd", "train.reg", "train.init_scale")  # what members of one population may differ in


def key(cfg: Config) -> tuple:
    """What members of one population share; trials with different keys train in different populations."""
    t = cfg.train
    return (repr(asdict(cfg.model)), t.optimizer, t.batch_size, t.group_by, t.group_size, t.epochs, t.patience, t.swa, t.sparse_grad,
            t.device, t.seed,  # the seed sets the batch order: a member replays alone exactly
            t.momentum if t.optimizer == "sgd" else None)  # one momentum per fused update


def model_supports(cfg: Config) -> bool:
    """Whether this configuration's model can hold populations (`Recommender.population`)."""
    from mfexp.models import model_class

    cls = model_class(cfg.model._target_)
    return bool(getattr(cls, "population", False)) and not cls.needs_for(cfg.model)


def supports(cfg: Config) -> bool:
    """Whether trials of this configuration can train in a population (else alone, as ever): its
    model can, and so can its optimizer (sgd, adam) and its swa (1: off)."""
    return model_supports(cfg) and cfg.train.optimizer in OPTIMIZERS and cfg.train.swa == 1


def auto_size(cfg: Config, n_trials: int) -> int:
    """sweep.population=auto: how many trials train together: 16 on the CPU, 64 on a GPU (a chosen
    size, not a measured optimum; BENCHMARKS.md trial_cost says what 16 gains), at most `n_trials`."""
    if not model_supports(cfg):
        return 1
    on_gpu = str(cfg.train.device).startswith("gpu")
    return max(1, min(n_trials, 64 if on_gpu else 16))


@dataclass
class Member:
    cfg: Config
    on_epoch: Optional[Callable[[EpochReport], None]] = None
    result: FitResult = field(default_factory=FitResult)
    net: Optional[gluon.Block] = None  # its lone network, holding its kept weights at the end
    error: Optional[BaseException] = None  # what stopped it (TrialPruned, TrainingDiverged), if anything
    active: bool = True
    since_best: int = 0
    best: Optional[list] = None  # its rows of each parameter at its best epoch (with patience)
    done: bool = False  # it has left the population, its kept weights in `net`


def _replicate(data: ModelData, p: int) -> ModelData:
    return ModelData(data.n_users * p, data.n_items * p, data.global_mean)


class _Step(gluon.HybridBlock):
    """The members' copies of a batch (ids offset), the stacked network, and each member's loss."""

    def __init__(self, net, n_members: int, batch: int):
        super().__init__(prefix="")
        self.net, self.n_members, self.batch = net, n_members, batch

    def hybrid_forward(self, F, rows, offsets, reg):
        # rows (B, 3): user, item, rating; offsets (P, 1, 3); reg (P, 1)
        stacked = F.reshape(F.broadcast_add(F.expand_dims(F.stop_gradient(rows), axis=0), offsets), (-3, 0))
        cols = F.split(stacked, num_outputs=3, axis=1, squeeze_axis=True)
        pred, sq = self.net(cols[0], cols[1])
        err = pred - cols[2]
        reg_rows = F.reshape(F.broadcast_like(reg, F.reshape(err, (self.n_members, -1))), (-1,))
        loss = 0.5 * F.square(err) + 0.5 * reg_rows * sq
        sse = F.sum(F.reshape(F.square(F.stop_gradient(err)), (self.n_members, -1)), axis=1)
        return loss, sse


class _Optimizer:
    """SGD with momentum or Adam over stacked tables, each member with its own lr and wd: MXNet's own
    fused sgd_mom_update / adam_update (an unfused update costs several times more here: MXNet's CPU
    elementwise operators are slow), lazy on row-sparse gradients as MXNet's default (only the rows a
    batch touched). SGD: the update of lr_row * (g + wd_row * w) at lr 1, which is the same step.
    Adam: its step at lr 1 (onto zeros), scaled by each row's lr."""

    def __init__(self, params, members: Sequence[Member], ctx):
        self.params = [p for p in params if p.grad_req != "null"]
        self.cfg = members[0].cfg.train
        self.kind = self.cfg.optimizer
        self.t = 0
        n = len(members)
        self.with_wd = any(m.cfg.train.wd for m in members)
        self.lr, self.wd, self.state = [], [], []
        for p in self.params:
            per, width = p.shape[0] // n, int(np.prod(p.shape[1:]))
            rows = lambda values: mx.nd.array(  # noqa: E731 - a full table, so that products are elementwise
                np.repeat(np.asarray(values, np.float32), per)[:, None].repeat(width, axis=1).reshape(p.shape), ctx=ctx)
            self.lr.append(rows([m.cfg.train.lr for m in members]))
            self.wd.append(rows([m.cfg.train.wd for m in members]) if self.with_wd else None)
            self.state.append([mx.nd.zeros(p.shape, ctx=ctx) for _ in range(1 if self.kind == "sgd" else 2)])

    def step(self, batch_size: int) -> None:
        self.t += 1
        coef = 1.0 if self.kind == "sgd" else math.sqrt(1.0 - FusedUpdate.BETA2 ** self.t) / (
            1.0 - FusedUpdate.BETA1 ** self.t)
        for p, lr, wd, state in zip(self.params, self.lr, self.wd, self.state):
            table, g = p.data(), p.grad()
            if g.stype == "row_sparse":  # the batch's rows only: gathered, updated, written back
                idx = g.indices
                if idx.shape[0] == 0:
                    continue
                g, lr, wd = g.data, lr.take(idx), (wd.take(idx) if wd is not None else None)
                w, rows_state = table.take(idx), [s.take(idx) for s in state]
            else:
                idx, w, rows_state = None, table, state
            self._update(w, g, lr, wd, rows_state, coef, batch_size)
            if idx is not None:
                for target, value in zip((table, *state), (w, *rows_state)):
                    mx.nd.contrib.index_copy(target, idx, value, out=target)  # in place: the rows only

    def _update(self, w, g, lr, wd, state, coef: float, batch_size: int) -> None:
        """Update w and state in place."""
        if wd is not None:  # g + wd * w, at the gradient's scale (rescale_grad divides it by the batch)
            g = g + wd * w * batch_size
        if self.kind == "sgd":
            mx.nd.sgd_mom_update(w, lr * g, state[0], lr=1.0, momentum=self.cfg.momentum, wd=0.0,
                                 rescale_grad=1.0 / batch_size, out=w)
            return
        step = mx.nd.zeros_like(w)
        mx.nd.adam_update(step, g, state[0], state[1], lr=coef, wd=0.0, rescale_grad=1.0 / batch_size,
                          beta1=FusedUpdate.BETA1, beta2=FusedUpdate.BETA2, epsilon=FusedUpdate.EPSILON, out=step)
        mx.nd.elemwise_add(w, lr * step, out=w)


def _member_rows(stacked: list, m: int, n: int) -> list:
    return [None if p is None else p[m * (p.shape[0] // n):(m + 1) * (p.shape[0] // n)].copy() for p in stacked]


def fit_population(members: Sequence[Member], data, ctx: mx.Context, *, eval_test: bool = False,
                   final_test: bool = False, on_done: Optional[Callable[[Member], None]] = None) -> list[Member]:
    """Train every member (each a Config and an epoch hook) at once; each member ends with its own
    FitResult and its lone network holding its kept weights (`Member.net`), as `train.fit` leaves
    one. A hook that raises stops its member only (kept in `Member.error`); KeyboardInterrupt stops
    all. `on_done(member)` is called as each member leaves (pruned, stopped early, diverged, or at
    the end), so that its trial can be told at once."""
    from mfexp.models import build_model, model_class
    from mfexp.train import build_net

    first = members[0].cfg
    if any(key(m.cfg) != key(first) for m in members) or not supports(first):
        raise ValueError("a population's members must share its key and support populations")
    n = len(members)
    for m in members:
        m.net = build_net(m.cfg, data, ctx)  # seeded and initialized as its lone run
    cls = model_class(first.model._target_)
    lone_data = members[0].net.data
    stacked = build_model(first.model, _replicate(lone_data, n), first.train.sparse_grad)
    stacked.initialize(mx.init.Zero(), ctx=ctx)
    params = list(stacked.collect_params().values())
    for j, p in enumerate(params):
        parts = [list(m.net.collect_params().values())[j].data(ctx) for m in members]
        if p.shape == parts[0].shape:  # a constant from the data (the global mean), the same in every member
            p.set_data(parts[0])
        elif p.shape[0] == n * parts[0].shape[0] and p.shape[1:] == parts[0].shape[1:]:
            p.set_data(mx.nd.concat(*parts, dim=0))
        else:
            raise ValueError(f"{cls.__name__} declares population support but its parameter {p.name} "
                             f"{p.shape} is not a per-row table")
    # members that share lr, wd and momentum (the tutorial's regime, seeds of one configuration) take
    # MXNet's own fused update, exactly their lone runs' optimizer; others the per-row one
    shared = len({(m.cfg.train.lr, m.cfg.train.wd, m.cfg.train.momentum) for m in members}) == 1
    opt = make_trainer(stacked, first.train) if shared else _Optimizer(params, members, ctx)
    tables = [p if p.grad_req != "null" else None for p in params]

    train = data.train
    total = len(train)
    scale = (float(data.rating_min), float(data.rating_max))
    host = np.empty((total, 3), dtype=np.float32)
    host[:, 0], host[:, 1], host[:, 2] = train.users, train.items, train.ratings
    rows = mx.nd.array(host, ctx=ctx)
    rng = np.random.default_rng(first.train.seed)
    cfg = first.train
    for epoch in range(1, cfg.epochs + 1):
        active = [i for i, m in enumerate(members) if m.active]
        if not active:
            break
        k = len(active)
        offsets = np.zeros((k, 1, 3), np.float32)
        offsets[:, 0, 0] = np.asarray(active) * lone_data.n_users
        offsets[:, 0, 1] = np.asarray(active) * lone_data.n_items
        off = mx.nd.array(offsets, ctx=ctx)
        reg = mx.nd.array([[members[i].cfg.train.reg] for i in active], ctx=ctx)
        step = _Step(stacked, k, cfg.batch_size)
        step.hybridize(static_alloc=True, static_shape=True)
        start = time.perf_counter()
        shuffled = rows.take(mx.nd.array(epoch_order(train, cfg.group_by, rng, cfg.group_size), ctx=ctx, dtype="int32"))
        sse, pending = mx.nd.zeros((k,), ctx=ctx), []
        for lo in range(0, total, cfg.batch_size):
            interrupt.check()
            hi = min(lo + cfg.batch_size, total)
            with autograd.record():
                loss, batch_sse = step(shuffled[lo:hi], off, reg)
            loss.backward()
            opt.step(hi - lo)
            pending.append(batch_sse)
            if len(pending) == SYNC_EVERY:  # one sum per SYNC_EVERY batches, not one per batch
                sse, pending = mx.nd.add_n(sse, *pending), []
        train_rmse = np.sqrt(mx.nd.add_n(sse, *pending).asnumpy() / total)
        elapsed = time.perf_counter() - start
        val = _evaluate(stacked, data.val, active, lone_data, ctx, scale)
        test = _evaluate(stacked, data.test, active, lone_data, ctx, scale) if eval_test else [None] * k
        weights = [p.data() if p is not None else None for p in tables]
        for j, i in enumerate(active):
            m = members[i]
            if not math.isfinite(float(train_rmse[j])):
                m.active = False
                try:
                    _check_finite(float(train_rmse[j]), epoch, m.cfg.train)
                except TrainingDiverged as err:
                    m.error = err
                continue
            report = EpochReport(epoch, float(train_rmse[j]), val[j], test[j], total * k / elapsed, elapsed)
            m.result.history.append(report)
            improved = report.val_rmse is not None and (m.result.best_val_rmse is None
                                                        or report.val_rmse < m.result.best_val_rmse)
            if report.val_rmse is None or improved:
                m.result.best_epoch, m.result.best_val_rmse, m.since_best = epoch, report.val_rmse, 0
                if cfg.patience is not None:
                    m.best = _member_rows(weights, i, n)
            else:
                m.since_best += 1
            try:
                if m.on_epoch is not None:
                    m.on_epoch(report)
            except KeyboardInterrupt:
                raise
            except BaseException as err:  # noqa: BLE001 - a pruned trial (or its hook failing): this member only
                m.error, m.active = err, False
                continue
            if cfg.patience is not None and m.since_best >= cfg.patience:
                m.result.stopped_early, m.active = True, False
        for i, m in enumerate(members):
            if not m.active and not m.done:
                _leave(m, _member_rows(weights, i, n), data, ctx, scale, final_test, on_done)
    weights = [p.data() if p is not None else None for p in tables]
    for i, m in enumerate(members):
        if not m.done:
            _leave(m, _member_rows(weights, i, n), data, ctx, scale, final_test, on_done)
    return list(members)


def _leave(m: Member, last: list, data, ctx, scale, final_test: bool, on_done) -> None:
    """`last`: the member's rows as it leaves, copied once here rather than every epoch."""
    m.active, m.done = False, True
    if m.result.history and not isinstance(m.error, TrainingDiverged):  # a diverged member's rows are not finite
        _keep(m, last, data, ctx, scale, final_test)
    if on_done is not None:
        on_done(m)


def _keep(m: Member, last: list, data, ctx, scale, final_test: bool) -> None:
    """Move a member's kept weights (its best epoch's with patience, else its last) into its lone net."""
    use_best = m.best is not None and m.result.best_epoch != m.result.history[-1].epoch
    for p, rows in zip(m.net.collect_params().values(), m.best if use_best else last):
        if rows is not None:
            p.set_data(rows)
    m.result.final_val_rmse = m.result.best_val_rmse if use_best else m.result.history[-1].val_rmse
    if final_test:
        m.result.final_test_rmse = evaluate(m.net, data.test, ctx, scale)
    m.best = None


def _evaluate(stacked, part, active: list[int], lone: ModelData, ctx, scale) -> list[Optional[float]]:
    """Each active member's RMSE on a data part, from one prediction over all of them."""
    if part is None or len(part) == 0:
        return [None] * len(active)
    a = np.asarray(active)[:, None]
    users = (part.users[None, :] + a * lone.n_users).reshape(-1)
    items = (part.items[None, :] + a * lone.n_items).reshape(-1)
    pred = np.clip(predict(stacked, users, items, ctx), *scale).reshape(len(active), -1)
    return [rmse(part.ratings, p) for p in pred]
