"""SparseBlock's two ways to a batch's rows (all rows, then gather; or the batch's distinct rows
only) give the same outputs and the same weight gradients."""
import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd

from mfexp.data.features import Csr
from mfexp.models import layers
from mfexp.models.layers import SparseBlock


def random_csr(rng, n_rows=40, n_cols=25, density=0.2) -> Csr:
    dense = np.where(rng.random((n_rows, n_cols)) < density, rng.normal(size=(n_rows, n_cols)), 0.0)
    dense[7] = 0.0  # an empty row (a user without ratings)
    rows, cols = np.nonzero(dense)
    return Csr.from_coo(rows, cols, dense[rows, cols], n_rows, n_cols)


def outputs_and_grads(block: SparseBlock, weight: np.ndarray, index: np.ndarray):
    w = mx.nd.array(weight)
    w.attach_grad()
    idx = mx.nd.array(index)
    with autograd.record():
        z = block.product(w, idx)
        norms = mx.nd.sum(mx.nd.square(w), axis=1, keepdims=True)
        q = block.squared_product(norms, idx)
        loss = mx.nd.sum(z * mx.nd.arange(z.shape[1]).reshape((1, -1))) + mx.nd.sum(q * q)
    loss.backward()
    predicted = block.product(w, idx), block.squared_product(norms, idx)  # inference: no autograd
    return z.asnumpy(), q.asnumpy(), w.grad.asnumpy(), *(p.asnumpy() for p in predicted)


WAYS = {"all rows": (False, 4096), "all rows, tall": (False, 0), "batch rows": (True, 4096), "batch rows, many": (True, 0)}


@pytest.mark.parametrize("batch", [1, 12, 60])  # 60 > 40 rows: duplicates for sure
def test_every_way_to_the_batch_rows_gives_the_same_outputs_and_gradients(batch, capfd, monkeypatch):
    rng = np.random.default_rng(batch)
    matrix = random_csr(rng)
    weight = rng.normal(size=(matrix.n_cols, 5)).astype(np.float32)
    index = np.concatenate([[7, 3, 3], rng.integers(0, matrix.n_rows, batch)])  # empty row, repeats
    results = {}
    for way, (gather, rows_max) in WAYS.items():  # rows_max 0: products over many rows (a Python backward)
        monkeypatch.setattr(layers, "TRANSPOSED_ROWS_MAX", rows_max)
        results[way] = outputs_and_grads(SparseBlock(matrix, gather=gather), weight, index)
    for way, got in results.items():
        for a, b in zip(results["all rows"], got):
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5, err_msg=way)
    z, q, *_ = results["all rows"]
    dense = matrix.to_dense()
    np.testing.assert_allclose(z, dense[index] @ weight, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(q[:, 0], (dense[index] ** 2) @ (weight ** 2).sum(axis=1), rtol=1e-5, atol=1e-5)
    assert "fallback" not in capfd.readouterr().err.lower()  # no dense storage fallback on the way


def test_auto_takes_batch_rows_for_matrices_much_taller_than_the_batch_or_batches_of_few_entries():
    block = SparseBlock(random_csr(np.random.default_rng(0)))  # 40 rows
    lengths = np.diff(block.matrix.indptr)
    order = np.argsort(lengths)[::-1]  # the fullest rows first
    share = np.cumsum(lengths[order]) * layers.GATHER_RATIO < block.matrix.nnz
    few, many = order[:share.sum()], order[:share.sum() + 1]  # under / over a quarter of the entries
    ids = lambda rows: mx.nd.array(np.resize(rows, 10))  # noqa: E731 - 10 ids: 40 rows is not over 4 x 10
    assert block.batch_rows(ids(few))  # a batch of few entries (repeats count once)
    assert not block.batch_rows(ids(many))
    assert block.batch_rows(mx.nd.array(np.resize(many, 9)))  # 40 rows > 4 x 9 ids: tall, whatever the entries
    assert SparseBlock(block.matrix, gather=False).batch_rows(mx.nd.array([0])) is False
