"""Section serving: the winner's speed as users meet it. Scoring every item for one user (what
`mfexp.recommend` does) and predicting all of u1.test (20,000 pairs) through the logged MLflow
pyfunc model, loaded with mlflow.pyfunc.load_model, for each model at k=64 trained one epoch.

    python -m bench.serving [--quick]
"""
from __future__ import annotations

import os
import time
from typing import Optional, Sequence

import mlflow
import numpy as np
import pandas as pd

from bench import common
from mfexp.models import io as model_io
from mfexp.config import Config, DataConfig, TrackingConfig, TrainConfig
from mfexp.data import load_dataset
from mfexp.experiment import run_tags, train_and_track
from mfexp.models.plugins import named
from mfexp.scoring import score_all, towers
from mfexp.track.tracker import Tracker

SECTION = "serving"
MODELS = ("plain", "mlp", "dropout", "biased")
USER_TARGET_MS, PAIRS_TARGET_MS = 5.0, 100.0


def _timed_ms(call, reps: int) -> float:
    call()  # warm-up: graph build, caches
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return common.median(times)


def measure(model: str, data, reps: int) -> dict:
    cfg = Config(model=named(model, k=64), train=TrainConfig(epochs=1, batch_size=1024, progress=False),
                 tracking=TrackingConfig(experiment="bench-serving"))
    tracker = Tracker(cfg.tracking)
    with tracker.run(run_name=model, params={}, tags=run_tags(cfg, data)):
        train_and_track(cfg, data, tracker, eval_test=False)
    pyfunc = mlflow.pyfunc.load_model(f"runs:/{tracker.run_id}/model")
    pairs = pd.DataFrame({"user_id": data.user_ids[data.test.users], "movie_id": data.item_ids[data.test.items]})
    pairs_ms = _timed_ms(lambda: pyfunc.predict(pairs), reps)
    trained = model_io.load(mlflow.artifacts.download_artifacts(f"runs:/{tracker.run_id}/model/artifacts/mfexp_model"))
    tw = towers(trained)
    user_ms = _timed_ms(lambda: score_all(trained, 0, tw), reps * 20)
    network_ms = _timed_ms(lambda: model_io.predict_ids(trained, np.full(data.n_items, data.user_ids[0]),
                                                        data.item_ids), reps * 4)
    return {"model": model, "pairs": len(pairs), "items": int(data.n_items), "predict_pairs_ms": round(pairs_ms, 2),
            "score_user_ms": round(user_ms, 3), "score_user_network_ms": round(network_ms, 2)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = common.section_args(__doc__.splitlines()[0], argv)
    common.quiet_logs()
    out = (args.out or common.RESULTS / f"{SECTION}.json").resolve()
    os.chdir(common.scratch())
    os.environ["MLFLOW_TRACKING_URI"] = common.mlflow_store(SECTION)

    started = time.perf_counter()
    data = load_dataset(DataConfig(val_fraction=0.0))
    rows = []
    for model in (("plain",) if args.quick else MODELS):
        rows.append(measure(model, data, 3 if args.quick else 15))
        r = rows[-1]
        common.say(SECTION, f"{model:>7}: {r['pairs']:,} pairs via pyfunc {r['predict_pairs_ms']:.1f} ms; one user, "
                            f"all {r['items']:,} items {r['score_user_ms']:.3f} ms (through the network "
                            f"{r['score_user_network_ms']:.2f} ms)")
    worst_pairs = max(r["predict_pairs_ms"] for r in rows)
    worst_user = max(r["score_user_ms"] for r in rows)
    targets = [common.target("score all items for one user (mfexp.recommend)", "< 5 ms", worst_user, "ms",
                             common.at_most(worst_user, USER_TARGET_MS), "slowest model"),
               common.target("predict all of u1.test (20,000 pairs) via the MLflow pyfunc model", "< 100 ms",
                             worst_pairs, "ms", common.at_most(worst_pairs, PAIRS_TARGET_MS), "slowest model")]
    notes = ["Medians after one warm-up call. pyfunc = mlflow.pyfunc.load_model('runs:/<id>/model').predict(df) "
             "with original ids (id lookup, unknown-id fallbacks and clipping included); one user = "
             "mfexp.scoring.score_all (a matrix-vector product over the model's towers)."]
    common.write_result(out, SECTION, args.quick, started, {"rows": rows}, targets, notes)
    return 0


def render(result: dict) -> list[str]:
    lines = ["Milliseconds, median (k=64, ML-100K sizes):", "",
             "| model | u1.test, 20,000 pairs, via pyfunc | one user, all items (recommend) | one user, via the network |",
             "|---|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['predict_pairs_ms']:.1f} | {r['score_user_ms']:.3f} | {r['score_user_network_ms']:.2f} |"
              for r in result["figures"]["rows"]]
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
