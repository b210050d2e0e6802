"""Pieces the networks share: BLAS row dot products, embeddings, and sparse feature blocks."""
from __future__ import annotations

import mxnet as mx
import numpy as np
from mxnet import autograd
from mxnet.gluon import nn

from mfexp.data.features import Csr


def rowdot(F, x, y):
    """Row-wise inner product as a matrix product with a ones vector: MXNet's CPU sum over
    axis 1 is several times slower than BLAS here (same values to ~1e-6)."""
    ones = F.ones_like(F.slice_axis(x, axis=0, begin=0, end=1))
    return F.reshape(F.dot(x * y, ones, transpose_b=True), (-1,))


def row_sq(F, x):
    return rowdot(F, x, x)


def embedding(n: int, k: int, sparse_grad: bool, **kwargs) -> nn.Embedding:
    return nn.Embedding(n, k, sparse_grad=sparse_grad, **kwargs)


def _nd_csr(c: Csr, ctx: mx.Context):
    return mx.nd.sparse.csr_matrix((c.values, c.indices, c.indptr), shape=(c.n_rows, c.n_cols), ctx=ctx)


def hstack(blocks: list[Csr]) -> Csr:
    """Side-by-side columns of CSR matrices with the same rows: one product instead of several."""
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


class _SparseDot(autograd.Function):
    """X @ W with X a constant CSR matrix. MXNet 1.9's own backward of dot(csr, dense) falls back
    to dense storage (slow, and a warning per batch); the gradient X^T @ dY is one more CSR product."""

    def __init__(self, x, xt):
        super().__init__()
        self.x, self.xt = x, xt

    def forward(self, w):
        return mx.nd.sparse.dot(self.x, w)

    def backward(self, dy):
        return mx.nd.sparse.dot(self.xt, dy)


class SparseBlock:
    """A (rows x features) CSR matrix of constant feature values, multiplied with a weight table
    (features x d) for ALL rows at once: one CSR product per batch, then the batch's rows are
    gathered. On ML-100K every user's (or item's) row costs less than gathering per rating, and
    the whole product stays on the device. Also gives sum_j x_j^2 w_j for FM self-interactions."""

    def __init__(self, matrix: Csr):
        self.matrix = matrix
        self._ctx = {}

    def _on(self, ctx):
        if ctx not in self._ctx:
            sq = Csr(self.matrix.indptr, self.matrix.indices, self.matrix.values ** 2, self.matrix.n_cols)
            self._ctx[ctx] = tuple(_nd_csr(m, ctx) for m in (self.matrix, transpose(self.matrix), sq, transpose(sq)))
        return self._ctx[ctx]

    def product(self, weight):
        """(rows x d) = X @ weight, differentiable in weight."""
        x, xt, _, _ = self._on(weight.context)
        return _SparseDot(x, xt)(weight)

    def squared_product(self, column):
        """(rows x 1) = (X*X) @ column: the FM's sum_j x_j^2 |v_j|^2 when column = |v_j|^2."""
        _, _, sq, sqt = self._on(column.context)
        return _SparseDot(sq, sqt)(column)

    def numpy_product(self, weight: np.ndarray, power: int = 1) -> np.ndarray:
        """X @ weight in numpy (power=2: (X*X) @ weight), for towers read once after training."""
        m = self.matrix
        rows = np.repeat(np.arange(m.n_rows), np.diff(m.indptr))
        out = np.zeros((m.n_rows, weight.shape[1]), dtype=np.float64)
        np.add.at(out, rows, (m.values.astype(np.float64) ** power)[:, None] * weight[m.indices])
        return out
