"""Pieces the networks share: BLAS row dot products, embeddings, and sparse feature blocks."""
from __future__ import annotations

from typing import Optional

import mxnet as mx
import numpy as np
from mxnet import autograd
from mxnet.gluon import HybridBlock, nn

from mfexp.data.features import Csr


def rowdot(F, x, y):
    """Row-wise inner product as a matrix product with a ones vector: MXNet's CPU sum over
    axis 1 is several times slower than BLAS here (same values to ~1e-6)."""
    ones = F.ones_like(F.slice_axis(x, axis=0, begin=0, end=1))
    # elemwise_mul, not `*`: an NDArray's `*` is broadcast_mul, whose CPU backward is a slow reduction
    return F.reshape(F.dot(F.elemwise_mul(x, y), ones, transpose_b=True), (-1,))


def row_sq(F, x):
    return rowdot(F, x, x)


def embedding(n: int, k: int, sparse_grad: bool, **kwargs) -> nn.Embedding:
    return nn.Embedding(n, k, sparse_grad=sparse_grad, **kwargs)


class TableStack(HybridBlock):
    """A population of a model whose every parameter is a table over users or items (Recommender.stack):
    the lone model with n times the rows, fed the members' offset ids flat."""

    def __init__(self, net, **kwargs):
        super().__init__(**kwargs)
        self.net = net

    def hybrid_forward(self, F, users, items, members, dropout):
        return self.net(F.reshape(users, (-1,)), F.reshape(items, (-1,)))


class Tables:
    """Mixin (before Recommender in the bases) for a model whose every trainable parameter is a table
    over users or items: its trials can train as one population, the lone model with n times the rows."""
    population = True

    @classmethod
    def stack(cls, members: list, data, sparse_grad: bool) -> TableStack:
        return TableStack(cls(members[0], data.replicate(len(members)), sparse_grad))


class StackedDense(HybridBlock):
    """n members' Dense(units, in_units) layers as one: weight (n * units, in_units), bias (n * units,),
    each member's slice its own layer's. Input (P, B, in_units) of the P members `members` names;
    one batched matrix product."""

    def __init__(self, n: int, units: int, in_units: int, **kwargs):
        super().__init__(**kwargs)
        self.n, self.units, self.in_units = n, units, in_units
        with self.name_scope():
            self.weight = self.params.get("weight", shape=(n * units, in_units))
            self.bias = self.params.get("bias", shape=(n * units,), init="zeros")

    def hybrid_forward(self, F, x, members, weight, bias):
        w = F.take(F.reshape(weight, (self.n, self.units, self.in_units)), members)
        b = F.expand_dims(F.take(F.reshape(bias, (self.n, self.units)), members), axis=1)
        return F.broadcast_add(F.batch_dot(x, w, transpose_b=True), b)


def member_dropout(F, x, rate):
    """Inverted dropout at each member's own rate: x (P, B, d), rate (P, 1, 1). A rate of 0 passes x
    unchanged (evaluation feeds zeros: a traced graph cannot ask whether it is training)."""
    keep = F.broadcast_greater_equal(F.random.uniform_like(F.stop_gradient(x)), rate)
    return F.broadcast_div(x * keep, 1.0 - rate)


def _nd_csr(c: Csr, ctx: mx.Context):
    return mx.nd.sparse.csr_matrix((c.values, c.indices, c.indptr), shape=(c.n_rows, c.n_cols), ctx=ctx)


def hstack(blocks: list[Csr]) -> Csr:
    """Side-by-side columns of CSR matrices with the same rows: one product instead of several."""
    if len(blocks) == 1:  # nothing to put side by side (a copy of a 25M-entry block costs seconds)
        return blocks[0]
    rows, cols, vals, offset = [], [], [], 0
    for c in blocks:
        rows.append(np.repeat(np.arange(c.n_rows, dtype=np.int64), np.diff(c.indptr)))
        cols.append(c.indices.astype(np.int64) + offset)
        vals.append(c.values)
        offset += c.n_cols
    return Csr.from_coo(np.concatenate(rows), np.concatenate(cols), np.concatenate(vals), blocks[0].n_rows, offset)


def transpose(c: Csr) -> Csr:
    rows = np.repeat(np.arange(c.n_rows, dtype=np.int64), np.diff(c.indptr))
    return Csr.from_coo(c.indices, rows, c.values, c.n_cols, c.n_rows)


GATHER_RATIO = 4  # the batch-rows path for tall matrices, or when a batch's rows hold few of the entries
TRANSPOSED_ROWS_MAX = 4096  # MXNet 1.9 CPU: dot(X^T, W, transpose_a=True) to dense copies X dense beyond ~10k rows


class _SparseDot(autograd.Function):
    """X @ W from X^T, a constant CSR matrix, for X of many rows: forward dot(X^T, W, transpose_a=True)
    as row-sparse, then dense; backward the plain CSR product X^T @ dY. (MXNet 1.9's own backward
    of dot(csr, dense) falls back to dense storage: slow, and a warning per batch.)"""

    def __init__(self, xt):
        super().__init__()
        self.xt = xt

    def forward(self, w):
        return mx.nd.sparse.dot(self.xt, w, transpose_a=True).tostype("default")

    def backward(self, dy):
        return mx.nd.sparse.dot(self.xt, dy)


def _times(xt, n_rows: int, w):
    """X @ W, differentiable in W, from X^T (n_rows: X's). Both directions read X^T row by row:
    W's rows in order, the output's few rows at random (cache-friendly for a batch's rows)."""
    if n_rows <= TRANSPOSED_ROWS_MAX:  # MXNet's own autograd: its backward is X^T @ dY, no Python callback
        return mx.nd.sparse.dot(xt, w, transpose_a=True, forward_stype="default")
    return _SparseDot(xt)(w)


class SparseBlock:
    """A (rows x features) CSR matrix of constant feature values, multiplied with a weight table
    (features x d). Also gives sum_j x_j^2 w_j for FM self-interactions. Two ways to a batch's rows:

    * all rows: X @ W for every row, one CSR product per batch on the device, then the batch's
      rows are gathered. On ML-100K (943 users, 1682 items) a random batch touches most rows anyway.
    * batch rows: the batch's distinct rows of X, sliced on the host in time proportional to their
      entries, transposed, multiplied, and mapped back with the inverse index. On ML-25M (162k
      users) a batch of 4096 touches few rows; with batches grouped by user or item
      (train.group_by) a batch holds a handful of that side's rows, on any data set.

    `gather` forces one (True: batch rows, False: all rows); None picks batch rows when the matrix has
    more than GATHER_RATIO times as many rows as the batch has ids, or when the batch's distinct rows
    hold less than 1/GATHER_RATIO of its entries."""

    def __init__(self, matrix: Csr, gather: Optional[bool] = None):
        self.matrix = matrix
        self.gather = gather
        self._ctx = {}  # (ctx, squared) -> X^T (or (X*X)^T) on ctx, made when first needed
        self._lengths = np.diff(matrix.indptr)
        self._batch = None  # (index, distinct rows, inverse, batch-rows path?, {squared: X_b^T}) of the last batch

    def _on(self, ctx, squared: bool):
        if (ctx, squared) not in self._ctx:
            m = self.matrix
            self._ctx[ctx, squared] = _nd_csr(transpose(Csr(m.indptr, m.indices, m.values ** 2, m.n_cols) if squared
                                                        else m), ctx)
        return self._ctx[ctx, squared]

    def _rows_of(self, index):
        """The batch's (distinct rows, inverse index, batch-rows path?), found once per index array."""
        if self._batch is None or self._batch[0] is not index:
            host = index.asnumpy() if hasattr(index, "asnumpy") else np.asarray(index)
            distinct, inverse = np.unique(host.astype(np.int64), return_inverse=True)
            if self.gather is not None:
                rows = self.gather
            else:  # all rows only for a matrix not much taller than the batch (a product over 162k rows
                # would be slow, and MXNet densifies X^T beyond ~10k) whose rows the batch mostly needs
                rows = (self.matrix.n_rows > GATHER_RATIO * len(host)
                        or GATHER_RATIO * int(self._lengths[distinct].sum()) < self.matrix.nnz)
            self._batch = (index, distinct, inverse, rows, {})
        return self._batch[1:]

    def batch_rows(self, index) -> bool:
        """True when `index` (the batch's row ids) takes the batch-rows path."""
        return self._rows_of(index)[2]

    def _columns_of(self, index, squared: bool):
        """(X_b^T: the batch's distinct rows of X, transposed, values squared if `squared`; the number
        of distinct rows; the inverse index on the device), made once per batch."""
        distinct, inverse, _, made = self._rows_of(index)
        if False not in made:
            m = self.matrix
            lengths = self._lengths[distinct]
            total = int(lengths.sum())
            # the entries of the distinct rows, in order: each row's start repeated, plus a running offset
            starts = np.repeat(m.indptr[distinct].astype(np.int64) - np.cumsum(lengths) + lengths, lengths)
            where = starts + np.arange(total, dtype=np.int64)
            features = m.indices[where].astype(np.int64)
            order = np.argsort(features, kind="stable")
            indptr = np.zeros(m.n_cols + 1, dtype=np.int64)
            np.cumsum(np.bincount(features, minlength=m.n_cols), out=indptr[1:])
            local = np.repeat(np.arange(len(distinct), dtype=np.int64), lengths)[order]
            ctx = index.context
            made[False] = mx.nd.sparse.csr_matrix((m.values[where][order], local, indptr),
                                                  shape=(m.n_cols, len(distinct)), ctx=ctx)
            made["inverse"] = mx.nd.array(inverse, ctx=ctx, dtype="int32")
        if squared and True not in made:
            made[True] = mx.nd.square(made[False])  # CSR in, CSR out: no second copy from the host
        return made[squared], len(distinct), made["inverse"]

    def _product(self, weight, index, squared: bool):
        if index is not None and self.batch_rows(index):
            xt, n, inverse = self._columns_of(index, squared)
            return _times(xt, n, weight).take(inverse)
        out = _times(self._on(weight.context, squared), self.matrix.n_rows, weight)
        return out if index is None else out.take(index)

    def product(self, weight, index=None):
        """X @ weight, differentiable in weight: (rows x d), or (len(index) x d) for rows `index`."""
        return self._product(weight, index, squared=False)

    def squared_product(self, column, index=None):
        """(X*X) @ column: the FM's sum_j x_j^2 |v_j|^2 when column = |v_j|^2 (one or more columns);
        rows `index` if given."""
        return self._product(column, index, squared=True)

    def numpy_product(self, weight: np.ndarray, power: int = 1) -> np.ndarray:
        """X @ weight in numpy (power=2: (X*X) @ weight), for towers read once after training."""
        m = self.matrix
        rows = np.repeat(np.arange(m.n_rows), np.diff(m.indptr))
        out = np.zeros((m.n_rows, weight.shape[1]), dtype=np.float64)
        np.add.at(out, rows, (m.values.astype(np.float64) ** power)[:, None] * weight[m.indices])
        return out
