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


def test_fm_section_measures_both_paths_and_a_synthetic_epoch_and_renders(tiny_data, tmp_path):
    from bench import fm

    paths = fm.measure_paths(tiny_data, batch_sizes=(64, 256), epochs=2)
    assert [(r["batch_size"], r["path"]) for r in paths] == [(64, "all"), (64, "rows"), (256, "all"), (256, "rows")]
    assert all(r["model"] == "fm" and r["samples_per_sec"] > 0 for r in paths)
    from mfexp.models import layers
    assert layers.GATHER_RATIO == 4  # the forced path is undone

    # 2,000 users and 500 items, batch 64: both sides far taller than a batch, so batch rows
    synthetic = fm.child(3_000, batch=64, budget_s=600.0, n_users=2_000, n_items=500)
    assert synthetic["paths"] == {"users": "batch rows", "items": "batch rows"}
    assert not synthetic["extrapolated"] and synthetic["measured_samples"] == 3_000
    assert synthetic["epoch_s"] > 0 and synthetic["peak_rss_mb"] >= synthetic["rss_after_data_mb"] > 0
    assert synthetic["feature_nnz"] == {"users": 3_000, "items": 3_000}  # implicit feedback: one entry per rating

    rows = [dict(r, k=32) for r in paths]
    figures = {"train_ratings": len(tiny_data.train), "epochs": 2, "rows": rows, "paths": paths,
               "synthetic": synthetic, "budget_s": 600.0}
    common.write_result(tmp_path / "fm.json", "fm", True, 0.0, figures, [], [])
    md = report.write_markdown(tmp_path, tmp_path / "BENCHMARKS.md").read_text()
    assert "## fm (quick)" in md and "| the batch's distinct rows |" in md and "| 3,000 |" in md


def test_a_run_of_some_sections_keeps_the_other_sections_of_the_summary(tmp_path):
    def result(section, value, load):
        machine = dict(common.machine(), load_avg=[load, load, load])
        return {"schema": 1, "section": section, "quick": False, "command": f"python -m bench.{section}",
                "finished": "then", "wall_s": 1.0, "machine": machine, "error": None, "notes": [f"{section} note"],
                "figures": {}, "targets": [common.target(f"{section} target", "report", value, "s", None)]}

    md_path, first, second = tmp_path / "BENCHMARKS.md", tmp_path / "a", tmp_path / "b"
    for folder, results in ((first, [result("scaling", 11.0, 1.5), result("workers", 22.0, 2.5)]),
                            (second, [result("workers", 33.0, 3.5)])):
        folder.mkdir()
        for r in results:
            (folder / f"{r['section']}.json").write_text(json.dumps(r))
        report.write_markdown(folder, md_path)  # the second run has workers only
    md = md_path.read_text()
    assert "| scaling | scaling target | report | 11 s |" in md and "scaling note" in md  # kept
    assert "| workers | workers target | report | 33 s |" in md and "22 s" not in md  # replaced
    assert "scaling 1.5, workers 3.5" in md
    assert md.index("## scaling") < md.index("## workers") and md.count("## workers") == 1
