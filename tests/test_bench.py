"""The benchmark harness (bench/) writes well-formed results and a summary from them.
Behaviour only: speed is what the benchmark measures, never what a test asserts."""
from __future__ import annotations

import json

import numpy as np

from bench import common, report, throughput  # bench/ is importable through pytest's pythonpath
from bench.synthetic import ml25m_like


def test_throughput_result_is_well_formed_json_and_renders(tiny_data, tmp_path):
    rows = throughput.measure(tiny_data, models=("plain", "biased"), batch_sizes=(64, 256), epochs=2)
    path = tmp_path / "results" / "throughput.json"
    common.write_result(path, "throughput", True, 0.0, {"train_ratings": len(tiny_data.train), "epochs": 2,
                                                        "rows": rows}, [], ["a note"])

    result = json.loads(path.read_text())
    assert result["section"] == "throughput" and result["quick"] is True
    assert {"cpu", "cores", "ram_gb", "mxnet", "numpy"} <= set(result["machine"])
    assert [(r["model"], r["batch_size"], r["sparse_grad"]) for r in result["figures"]["rows"]] == [
        (m, b, sparse) for sparse in (False, True) for m in ("plain", "biased") for b in (64, 256)]
    assert all(r["samples_per_sec"] > 0 and len(r["per_epoch"]) >= 2 for r in result["figures"]["rows"])

    md = report.write_markdown(path.parent, tmp_path / "BENCHMARKS.md").read_text()
    assert "Quick figures" in md and "## throughput (quick)" in md and "| biased |" in md and "| biased, sparse grads |" in md


def test_synthetic_ml25m_shape_is_seeded_and_long_tailed():
    a = ml25m_like(20_000, seed=3, n_users=5_000, n_items=2_000)
    b = ml25m_like(20_000, seed=3, n_users=5_000, n_items=2_000)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    users, items, ratings = a
    assert users.dtype == np.int32 and items.max() < 2_000 and ratings.min() >= 0.5 and ratings.max() <= 5.0
    per_item = np.bincount(items, minlength=2_000)
    assert per_item.max() > 10 * np.median(per_item)  # the most rated item towers over the typical one
