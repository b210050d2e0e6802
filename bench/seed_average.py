"""What averaging seeds is worth on fm's reference configuration (16 epochs, Adam, SWA 3): each
seed's RMSE and the running average's. BENCHMARKS.md's seed-averaging figures.

    python -m bench.seed_average val 4      # the holdout kept: val and test RMSE per seed and of the average
    python -m bench.seed_average refit 4    # trained on train + holdout (sweep.refit): test RMSE
"""
from __future__ import annotations

import sys
import time
from dataclasses import replace

import mxnet as mx
import numpy as np
from omegaconf import OmegaConf

from mfexp.config import Config
from mfexp.data import load_dataset
from mfexp.metrics import rmse
from mfexp.models.plugins import typed_node
from mfexp.sweep.plan import compose_config
from mfexp.sweep.objective import apply_params
from mfexp.train import build_net, fit, predict


def main(argv: list[str]) -> int:
    mode, seeds = (argv + ["val", "4"][len(argv):])[:2]
    base = compose_config(["model=fm", "train=adam", "train.progress=false"])
    base.model = typed_node(base.model)
    base = OmegaConf.merge(OmegaConf.structured(Config),
                           OmegaConf.masked_copy(base, ["data", "model", "train", "tracking"]))
    refit = mode == "refit"
    cfg = apply_params(base, {"train.epochs": 16, "train.patience": None,
                              **({"data.val_fraction": 0.0} if refit else {})})
    data = load_dataset(cfg.data)
    ctx = mx.cpu()
    clip = lambda p: np.clip(p, data.rating_min, data.rating_max)  # noqa: E731
    vals, tests = [], []
    for seed in range(int(seeds)):
        c = replace(cfg, train=replace(cfg.train, seed=cfg.train.seed + seed))
        start = time.time()
        net = build_net(c, data, ctx)
        fit(net, data, c.train, ctx, eval_test=False, final_test=False)
        if len(data.val):
            vals.append(predict(net, data.val.users, data.val.items, ctx, data.val.timestamps))
        tests.append(predict(net, data.test.users, data.test.items, ctx, data.test.timestamps))
        line = (f"seed {seed}: test {rmse(data.test.ratings, clip(tests[-1])):.4f}, average of {len(tests)}: "
                f"{rmse(data.test.ratings, clip(np.mean(tests, 0))):.4f}")
        if vals:
            line += (f"; val {rmse(data.val.ratings, clip(vals[-1])):.4f}, average: "
                     f"{rmse(data.val.ratings, clip(np.mean(vals, 0))):.4f}")
        print(f"{line}  ({time.time() - start:.0f}s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
