"""Each id reaches its own table; each model learns on a tiny data set."""
import mxnet as mx
import numpy as np
import pytest

from mfexp.config import TrainConfig
from mfexp.models import ModelData, build_for_data, build_model
from mfexp.models.plugins import named
from mfexp.train import fit

MODELS = ["plain", "mlp", "dropout", "biased", "svdpp", "fm", "autorec"]


def small(name: str) -> dict:
    """Settings that make each model small (autorec has no factor size k)."""
    if name == "autorec":
        return {"hidden": 8}
    return {"k": 8, **({"hidden": 8, "dropout": 0.2} if name in ("mlp", "dropout") else {})}


def test_user_ids_reach_the_user_table_and_item_ids_the_item_table():
    # 5 users, 7 items: distinct sizes, so a swapped feed would be clipped or misplaced.
    net = build_model(named("plain", k=1), ModelData(n_users=5, n_items=7))
    net.initialize()
    net.user_embedding.weight.set_data(mx.nd.arange(5).reshape((5, 1)) + 10)  # user u -> 10+u
    net.item_embedding.weight.set_data(mx.nd.ones((7, 1)))
    users, items = mx.nd.array([0, 4, 2, 3]), mx.nd.array([6, 1, 5, 0])
    pred, _ = net(users, items)
    assert pred.asnumpy().tolist() == [10, 14, 12, 13]
    net.user_embedding.weight.set_data(mx.nd.ones((5, 1)))
    net.item_embedding.weight.set_data(mx.nd.arange(7).reshape((7, 1)) + 100)  # item i -> 100+i
    pred, _ = net(users, items)
    assert pred.asnumpy().tolist() == [106, 101, 105, 100]


def test_biased_model_adds_biases_and_global_mean():
    net = build_model(named("biased", k=2), ModelData(n_users=3, n_items=4, global_mean=3.5))
    net.initialize()
    net.user_embedding.weight.set_data(mx.nd.zeros((3, 2)))
    net.user_bias.weight.set_data(mx.nd.array([[0.1], [0.2], [0.3]]))
    net.item_bias.weight.set_data(mx.nd.array([[-1], [0], [1], [2]]))
    pred, _ = net(mx.nd.array([2, 0]), mx.nd.array([3, 0]))
    np.testing.assert_allclose(pred.asnumpy(), [3.5 + 0.3 + 2, 3.5 + 0.1 - 1], rtol=1e-6)


@pytest.mark.parametrize("name", MODELS)
def test_each_model_trains_with_falling_loss(name, tiny_data):
    mx.random.seed(0)
    net = build_for_data(named(name, **small(name)), tiny_data)
    net.initialize(mx.init.Uniform(0.1))
    net.hybridize(static_alloc=True, static_shape=True)
    cfg = TrainConfig(optimizer="adam", lr=0.01, wd=0.0, batch_size=64, epochs=4, progress=False)
    result = fit(net, tiny_data, cfg, mx.cpu())
    train = [r.train_rmse for r in result.history]
    assert train[-1] < train[0] * 0.9, train
    assert np.isfinite(result.final_test_rmse)


def test_dropout_is_active_in_training_only(tiny_data):
    net = build_model(named("dropout", k=8, hidden=8, dropout=0.5), ModelData(10, 10))
    net.initialize(mx.init.Uniform(0.5))
    u, i = mx.nd.array([1, 2, 3]), mx.nd.array([4, 5, 6])
    a, b = net(u, i)[0].asnumpy(), net(u, i)[0].asnumpy()
    np.testing.assert_array_equal(a, b)  # inference: deterministic
    with mx.autograd.record():
        outs = [net(u, i)[0].asnumpy() for _ in range(5)]
    assert any(not np.array_equal(outs[0], o) for o in outs[1:])


@pytest.mark.parametrize("leave_out", [True, False])
def test_autorec_leaves_the_rating_it_predicts_out_of_its_input(leave_out):
    from mfexp.data.features import Csr

    # 3 users, 2 items; item 0 is rated 5 by user 0 and 1 by user 1, item 1 is rated 4 by user 2
    data = ModelData(n_users=3, n_items=2, global_mean=3.0)
    data.item_ratings = Csr.from_coo(np.array([0, 0, 1]), np.array([0, 1, 2]), np.array([5.0, 1.0, 4.0], np.float32),
                                     2, 3)
    net = build_model(named("autorec", hidden=2, activation="relu", leave_out=leave_out), data)
    net.initialize()
    enc = np.array([[0.1, 0.2], [0.3, 0.1], [0.05, 0.4]], np.float32)  # every input stays > 0: relu is the identity
    dec = np.array([[1.0, -1.0], [0.5, 2.0], [-1.0, 1.0]], np.float32)
    net.encoder.weight.set_data(mx.nd.array(enc))
    net.encoder_bias.set_data(mx.nd.array([[0.01, 0.02]]))
    net.decoder.weight.set_data(mx.nd.array(dec))
    net.decoder_bias.weight.set_data(mx.nd.array([[0.1], [0.2], [0.3]]))
    pred, sq = net(mx.nd.array([0, 2, 1]), mx.nd.array([0, 0, 1]))

    def want(u, column):  # mean + <encoder(column) , decoder row u> + decoder bias u
        h = column @ enc + [0.01, 0.02]
        return 3.0 + h @ dec[u] + [0.1, 0.2, 0.3][u]

    item0, item1 = np.array([5.0, 1.0, 0.0]), np.array([0.0, 0.0, 4.0])
    # (user 0, item 0) is a training rating: left out, the input is user 1's rating only
    first = want(0, np.array([0.0, 1.0, 0.0]) if leave_out else item0)
    np.testing.assert_allclose(pred.asnumpy(), [first, want(2, item0), want(1, item1)], rtol=1e-5)
    np.testing.assert_allclose(sq.asnumpy()[1], (enc[2] ** 2).sum() + (dec[2] ** 2).sum() + 0.3 ** 2, rtol=1e-5)


def test_autorec_without_the_ratings_says_what_it_needs():
    from mfexp.errors import ConfigError

    with pytest.raises(ConfigError, match="autorec needs the training ratings"):
        build_model(named("autorec"), ModelData(n_users=3, n_items=2))
