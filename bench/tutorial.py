"""The MXNet matrix-factorization tutorial's own training code, ported to Python 3 for the benchmark.

Faithful to /work/shared/reference/mxnet-matrix-factorization-tutorial.md: the same Batch and
DataIter (one Python tuple per rating, one `mx.nd.array` per batch from Python lists), the same
`plain_net`, `mx.model.FeedForward` with the same optimizer settings, the same per-batch Python
RMSE metric and Speedometer. Only what Python 3 and this machine require changed:
`file()` -> `open()`, `/` -> `//`, `ctx=mx.gpu(0)` -> `mx.cpu()`, u.data's max ids read from
u1.base + u1.test (together they are u.data), seeds fixed, and the measurements added around fit.

    python -m mfexp.data export out=DIR
    python bench/tutorial.py --data-dir DIR [--epochs 10] [--json OUT]
"""
import argparse
import json
import logging
import math
import os
import random
import re
import sys
import time

T_START = time.perf_counter()

import mxnet as mx  # noqa: E402


class Batch(object):
    def __init__(self, data_names, data, label_names, label):
        self.data = data
        self.label = label
        self.data_names = data_names
        self.label_names = label_names

    @property
    def provide_data(self):
        return [(n, x.shape) for n, x in zip(self.data_names, self.data)]

    @property
    def provide_label(self):
        return [(n, x.shape) for n, x in zip(self.label_names, self.label)]


class DataIter(mx.io.DataIter):
    def __init__(self, fname, batch_size):
        super(DataIter, self).__init__()
        self.batch_size = batch_size
        self.data = []
        for line in open(fname):
            tks = line.strip().split('\t')
            if len(tks) != 4:
                continue
            self.data.append((int(tks[0]), int(tks[1]), float(tks[2])))
        self.provide_data = [('user', (batch_size, )), ('item', (batch_size, ))]
        self.provide_label = [('score', (self.batch_size, ))]

    def __iter__(self):
        for k in range(len(self.data) // self.batch_size):
            users = []
            items = []
            scores = []
            for i in range(self.batch_size):
                j = k * self.batch_size + i
                user, item, score = self.data[j]
                users.append(user)
                items.append(item)
                scores.append(score)

            data_all = [mx.nd.array(users), mx.nd.array(items)]
            label_all = [mx.nd.array(scores)]
            data_names = ['user', 'item']
            label_names = ['score']

            data_batch = Batch(data_names, data_all, label_names, label_all)
            yield data_batch

    def reset(self):
        random.shuffle(self.data)


def get_data(data_dir, batch_size):
    return (DataIter(os.path.join(data_dir, 'u1.base'), batch_size),
            DataIter(os.path.join(data_dir, 'u1.test'), batch_size))


def max_id(fname):
    mu = 0
    mi = 0
    for line in open(fname):
        tks = line.strip().split('\t')
        if len(tks) != 4:
            continue
        mu = max(mu, int(tks[0]))
        mi = max(mi, int(tks[1]))
    return mu + 1, mi + 1


def RMSE(label, pred):
    ret = 0.0
    n = 0.0
    pred = pred.flatten()
    for i in range(len(label)):
        ret += (label[i] - pred[i]) * (label[i] - pred[i])
        n += 1.0
    return math.sqrt(ret / n)


def plain_net(k, max_user, max_item):
    # input
    user = mx.symbol.Variable('user')
    item = mx.symbol.Variable('item')
    score = mx.symbol.Variable('score')
    # user feature lookup
    user = mx.symbol.Embedding(data=user, input_dim=max_user, output_dim=k)
    # item feature lookup
    item = mx.symbol.Embedding(data=item, input_dim=max_item, output_dim=k)
    # predict by the inner product, which is elementwise product and then sum
    pred = user * item
    pred = mx.symbol.sum_axis(data=pred, axis=1)
    pred = mx.symbol.Flatten(data=pred)
    # loss layer
    pred = mx.symbol.LinearRegressionOutput(data=pred, label=score)
    return pred


def train(network, data_dir, batch_size, num_epoch, learning_rate):
    model = mx.model.FeedForward(
        ctx=mx.cpu(),
        symbol=network,
        num_epoch=num_epoch,
        learning_rate=learning_rate,
        wd=0.0001,
        momentum=0.9)

    batch_size = 64  # the tutorial's train() ignores its argument and trains at 64
    train, test = get_data(data_dir, batch_size)

    logging.basicConfig(level=logging.DEBUG)

    model.fit(X=train,
              eval_data=test,
              eval_metric=RMSE,
              batch_end_callback=mx.callback.Speedometer(batch_size, 20000 // batch_size),)
    return len(train.data) // batch_size * batch_size


class _LogTap(logging.Handler):
    """Reads the figures FeedForward logs: Speedometer speeds, epoch time costs, validation RMSE."""

    def __init__(self):
        super().__init__(level=logging.INFO)
        self.speeds, self.epoch_times, self.val_rmse = [], [], []

    def emit(self, record):
        text = record.getMessage()
        for pattern, out in ((r"Speed: ([\d.]+) samples/sec", self.speeds), (r"Time cost=([\d.]+)", self.epoch_times),
                             (r"Validation-RMSE=([\d.]+)", self.val_rmse)):
            match = re.search(pattern, text)
            if match:
                out.append(float(match.group(1)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="folder holding u1.base and u1.test")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--json", help="write the measured figures here")
    args = parser.parse_args(argv)
    random.seed(0)
    mx.random.seed(0)
    logging.basicConfig(level=logging.DEBUG)  # what train() does, done first so the tap can follow
    tap = _LogTap()
    logging.getLogger().addHandler(tap)
    max_user, max_item = (max(a, b) for a, b in zip(max_id(os.path.join(args.data_dir, 'u1.base')),
                                                     max_id(os.path.join(args.data_dir, 'u1.test'))))
    t_fit = time.perf_counter()
    samples = train(plain_net(args.k, max_user, max_item), args.data_dir, 64, args.epochs, .05)
    fit_s = time.perf_counter() - t_fit
    train_s = sum(tap.epoch_times)
    figures = {
        "api": "mx.model.FeedForward",
        "epochs": args.epochs, "batch_size": 64, "k": args.k, "samples_per_epoch": samples,
        "samples_per_sec": samples * len(tap.epoch_times) / train_s if train_s else None,
        "samples_per_sec_last_epoch": samples / tap.epoch_times[-1] if tap.epoch_times else None,
        "speedometer_mean": sum(tap.speeds) / len(tap.speeds) if tap.speeds else None,
        "epoch_times_s": tap.epoch_times, "fit_s": fit_s,
        "final_val_rmse": tap.val_rmse[-1] if tap.val_rmse else None,
        "script_s": time.perf_counter() - T_START,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
