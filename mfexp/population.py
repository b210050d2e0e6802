"""Populations: several trials of one model trained at once, as one network.

A model that says so (`Recommender.population`) builds P members side by side (`Recommender.stack`):
each parameter gets P times the rows, member m's ids are offset by m times the table's rows, and its
Dense layers become one batched product (plain, biased, mlp and dropout). One forward pass, one
backward pass and one optimizer update per batch serve every member. MXNet's fixed cost per batch
(graph calls, optimizer dispatch, host syncs) is then paid once for P trials; the arithmetic per
rating is not shared, so the gain is largest at small batches, and on the CPU often none
(BENCHMARKS.md, trial_cost; `auto_size`).

Per member: train.lr, train.wd, train.reg and train.init_scale, and the model settings its class
names in `per_member` (the dropout rate). Shared (the population's `key`): the model's other
settings, the optimizer (and SGD's momentum), the batch size, the batch order (train.seed,
train.group_by), the epochs, patience, swa, sparse_grad and the device.

Members that share lr and wd train with MXNet's own optimizer, exactly as alone; otherwise each
row's lr and wd enter MXNet's fused sgd_mom_update / adam_update (lazy on row-sparse gradients, as
MXNet's default) as `_Optimizer` says. Each member starts from exactly the weights its lone run
starts from (built alone, seeded, then copied in), sees the same batches, and ends where its lone
run ends to float rounding: tests/test_population.py states and checks the tolerance. With dropout
a member draws other masks than its lone run would: its result is its own network's, and a lone
replay of it (the sweep's test evaluation) is another draw. A member that is pruned (its hook
raises), stops early or diverges leaves the population at that epoch: the next epoch's graph no
longer computes it.
"""
from __future__ import annotations

import functools
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Sequence

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from mfexp import interrupt
from mfexp.config import Config
from mfexp.errors import TrainingDiverged
from mfexp.metrics import rmse
from mfexp.models import model_class
from mfexp.models.base import ModelData
from mfexp.train import (EVAL_BATCH, SYNC_EVERY, EpochReport, FitResult, FusedUpdate, _check_finite, epoch_order,
                         build_net, evaluate, make_trainer)

OPTIMIZERS = ("sgd", "adam")
# Above this batch a population of plain MF measured slower on the CPU than its trials one at a time
# (BENCHMARKS.md, trial_cost): there sweep.population=auto is 1 on the CPU
CPU_BATCH_MAX = 64
PER_MEMBER = ("train.lr", "train.wd", "train.reg", "train.init_scale")  # what members of one population may differ in


def per_member(cfg: Config) -> tuple[str, ...]:
    """The dotted keys members of one population may differ in, for this configuration's model."""
    return PER_MEMBER + tuple(getattr(model_class(cfg.model._target_), "per_member", ()))


def key(cfg: Config) -> tuple:
    """What members of one population share; trials with different keys train in different populations."""
    t = cfg.train
    own = {k.split(".", 1)[1] for k in per_member(cfg) if k.startswith("model.")}
    shared = {k: v for k, v in asdict(cfg.model).items() if k not in own}
    return (repr(shared), t.optimizer, t.batch_size, t.group_by, t.group_size, t.epochs, t.patience, t.swa, t.sparse_grad,
            t.device, t.seed,  # the seed sets the batch order: a member replays alone exactly
            t.momentum if t.optimizer == "sgd" else None)  # one momentum per fused update


def model_supports(cfg: Config) -> bool:
    """Whether this configuration's model can hold populations (`Recommender.population`)."""
    cls = model_class(cfg.model._target_)
    return bool(getattr(cls, "population", False)) and not cls.needs_for(cfg.model)


def supports(cfg: Config) -> bool:
    """Whether trials of this configuration can train in a population (else alone, as ever): its
    model can, and so can its optimizer (sgd, adam) and its swa (1: off)."""
    return model_supports(cfg) and cfg.train.optimizer in OPTIMIZERS and cfg.train.swa == 1


def auto_size(cfg: Config, n_trials: int, largest_batch: Optional[int] = None) -> int:
    """sweep.population=auto: how many trials train together: 64 on a GPU, 16 on the CPU (chosen sizes,
    not measured optima), at most `n_trials`. On the CPU a population pays only where MXNet's fixed cost
    per batch outweighs the arithmetic, so there it is 1 when its trials may draw a batch above
    CPU_BATCH_MAX (`largest_batch`, else cfg's own), when they train with dense gradients (every step
    then updates every member's whole tables: 0.5x, BENCHMARKS.md trial_cost), or when the model says
    populations do not pay on the CPU (`Recommender.population_on_cpu`)."""
    if not model_supports(cfg):
        return 1
    on_gpu = str(cfg.train.device).startswith("gpu")
    if not on_gpu:
        batch = largest_batch if largest_batch is not None else cfg.train.batch_size
        if (batch > CPU_BATCH_MAX or not cfg.train.sparse_grad
                or not getattr(model_class(cfg.model._target_), "population_on_cpu", True)):
            return 1
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


class _Step(gluon.HybridBlock):
    """The members' copies of a batch (ids offset), the stacked network, and each member's loss."""

    def __init__(self, net, n_members: int, batch: int):
        super().__init__(prefix="")
        self.net, self.n_members, self.batch = net, n_members, batch

    def hybrid_forward(self, F, rows, offsets, reg, members, dropout):
        # rows (B, 3): user, item, rating; offsets (P, 1, 3); reg (P, 1); members (P,); dropout (P, 1, 1)
        stacked = F.broadcast_add(F.expand_dims(F.stop_gradient(rows), axis=0), offsets)  # (P, B, 3)
        cols = F.split(stacked, num_outputs=3, axis=2, squeeze_axis=True)
        pred, sq = self.net(cols[0], cols[1], members, dropout)
        err = pred - F.reshape(cols[2], (-1,))
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


def _quiet_unused_inputs(fn):
    """A stacked model without dropout (or Dense layers) leaves the members and rates inputs unused, as
    meant: MXNet's warning about it, once per traced graph, is not shown."""
    @functools.wraps(fn)
    def quiet(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"The .* input to HybridBlock is not used")
            return fn(*args, **kwargs)
    return quiet


@_quiet_unused_inputs
def fit_population(members: Sequence[Member], data, ctx: mx.Context, *, eval_test: bool = False,
                   final_test: bool = False, on_done: Optional[Callable[[Member], None]] = None) -> list[Member]:
    """Train every member (each a Config and an epoch hook) at once; each member ends with its own
    FitResult and its lone network holding its kept weights (`Member.net`), as `train.fit` leaves
    one. A hook that raises stops its member only (kept in `Member.error`); KeyboardInterrupt stops
    all. `on_done(member)` is called as each member leaves (pruned, stopped early, diverged, or at
    the end), so that its trial can be told at once."""
    first = members[0].cfg
    if any(key(m.cfg) != key(first) for m in members) or not supports(first):
        raise ValueError("a population's members must share its key and support populations")
    n = len(members)
    for m in members:
        m.net = build_net(m.cfg, data, ctx)  # seeded and initialized as its lone run
    cls = model_class(first.model._target_)
    lone_data = members[0].net.data
    stacked = cls.stack([m.cfg.model for m in members], lone_data, first.train.sparse_grad)
    stacked.initialize(mx.init.Zero(), ctx=ctx)
    params, lones = list(stacked.collect_params().values()), [list(m.net.collect_params().values()) for m in members]
    if len(params) != len(lones[0]):
        raise ValueError(f"{cls.__name__}.stack: {len(params)} parameters, its lone network has {len(lones[0])}")
    for j, p in enumerate(params):
        parts = [lone[j].data(ctx) for lone in lones]
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
        ids = mx.nd.array(active, ctx=ctx)
        rates = mx.nd.array([_dropout(members[i].cfg) for i in active], ctx=ctx).reshape((k, 1, 1))
        step = _Step(stacked, k, cfg.batch_size)
        step.hybridize(static_alloc=True, static_shape=True)
        start = time.perf_counter()
        shuffled = rows.take(mx.nd.array(epoch_order(train, cfg.group_by, rng, cfg.group_size), ctx=ctx, dtype="int32"))
        sse, pending = mx.nd.zeros((k,), ctx=ctx), []
        for lo in range(0, total, cfg.batch_size):
            interrupt.check()
            hi = min(lo + cfg.batch_size, total)
            with autograd.record():
                loss, batch_sse = step(shuffled[lo:hi], off, reg, ids, rates)
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
    """Each active member's RMSE on a data part, from one prediction over all of them (dropout off)."""
    if part is None or len(part) == 0:
        return [None] * len(active)
    a = np.asarray(active)[:, None]
    users, items = part.users[None, :] + a * lone.n_users, part.items[None, :] + a * lone.n_items
    ids, rates = mx.nd.array(active, ctx=ctx), mx.nd.zeros((len(active), 1, 1), ctx=ctx)
    width = max(1, EVAL_BATCH // len(active))  # ratings per call, for every member at once
    chunks = [stacked(*(mx.nd.array(x[:, lo:lo + width], ctx=ctx) for x in (users, items)), ids, rates)[0]
              for lo in range(0, users.shape[1], width)]
    pred = np.concatenate([c.asnumpy().reshape(len(active), -1) for c in chunks], axis=1)
    return [rmse(part.ratings, p) for p in np.clip(pred, *scale)]


def _dropout(cfg: Config) -> float:
    return float(getattr(cfg.model, "dropout", 0.0))
