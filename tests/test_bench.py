"""The benchmark harness (bench/) writes well-formed results and a summary from them.
Behaviour only: speed is what the benchmark measures, never what a test asserts."""
from __future__ import annotations

import json

import numpy as np
import pytest

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


def test_a_run_on_another_machine_keeps_the_machine_of_the_sections_it_did_not_run(tmp_path):
    def result(section, cpu):
        machine = dict(common.machine(), cpu=cpu, cores=2, cores_usable=2, ram_gb=23.5, os="Linux x")
        return {"schema": 1, "section": section, "quick": False, "command": f"python -m bench.{section}",
                "finished": "then", "wall_s": 1.0, "machine": machine, "error": None, "notes": [],
                "figures": {}, "targets": [common.target(f"{section} target", "report", 1.0, "s", None)]}

    md_path = tmp_path / "BENCHMARKS.md"
    runs = [[result("scaling", "AMD EPYC"), result("workers", "AMD EPYC")], [result("workers", "Intel Xeon")],
            [result("load", "Intel Xeon")]]
    for n, results in enumerate(runs):
        folder = tmp_path / str(n)
        folder.mkdir()
        for r in results:
            (folder / f"{r['section']}.json").write_text(json.dumps(r))
        report.write_markdown(folder, md_path)
        cpu = next(line for line in md_path.read_text().splitlines() if line.startswith("- CPU: "))
        if n == 0:  # one machine: one line, as before
            assert cpu == "- CPU: AMD EPYC, 2 cores (2 usable), RAM 23.5 GB, Linux x"
    # scaling was measured on the EPYC, workers (second run) and load (third) on the Xeon
    assert cpu == ("- CPU: AMD EPYC, 2 cores (2 usable), RAM 23.5 GB, Linux x [sections: scaling]; "
                   "Intel Xeon, 2 cores (2 usable), RAM 23.5 GB, Linux x [sections: workers, load]")


def test_a_run_keeps_the_hand_written_sections_after_the_generated_ones(tmp_path):
    def result(section, value):
        return {"schema": 1, "section": section, "quick": False, "command": f"python -m bench.{section}",
                "finished": "then", "wall_s": 1.0, "machine": common.machine(), "error": None, "notes": [],
                "figures": {}, "targets": [common.target(f"{section} target", "report", value, "s", None)]}

    md_path, hand = tmp_path / "BENCHMARKS.md", ["## Sweep results", "", "measured 2026-12-01: `cmd`", "",
                                                 "### The longer sweep", "", "| a | b |", "|---|---|"]
    for n, value in enumerate((11.0, 22.0)):
        folder = tmp_path / str(n)
        folder.mkdir()
        (folder / "workers.json").write_text(json.dumps(result("workers", value)))
        report.write_markdown(folder, md_path)
        if n == 0:  # written by hand after the first run
            md_path.write_text(md_path.read_text() + "\n" + "\n".join(hand) + "\n")
    md = md_path.read_text()
    assert "| workers | workers target | report | 22 s |" in md and "11 s" not in md
    assert md.count("## Sweep results") == 1 and "\n".join(hand) in md  # whole, its subsections too
    assert md.index("## workers") < md.index("## Sweep results") and "written by hand" in md

# --- load: worker commands on one sweep, exact counts -----------------------------------------------

def _load_row(**changes):
    """What ops.load gathers from one backend's run: a clean one, with `changes` applied
    (dotted keys reach into the nested facts)."""
    row = {"backend": "journal", "exit_codes": [0, 0, 0, 0], "wall_s": 100.0,
           "optuna": {"trials": 12, "counted": 12, "by_state": {"COMPLETE": 12}, "numbers_unique": True,
                      "numbers_contiguous": True, "per_worker": [3, 3, 3, 3], "trials_of_unknown_worker": 0,
                      "reference_trials": 1, "repeated_configurations": 0, "mlflow_gaps": 0, "search_s": 50.0,
                      "steady_s": 40.0, "steady_trials": 8, "mean_trial_s": 2.0},
           "mlflow": {"trial_runs": 12, "duplicate_trial_runs": 0, "other_study": 0, "trials_without_run": 0,
                      "runs_without_trial": 0, "running": 0, "status_not_matching_state": 0,
                      "run_id_not_matching": 0, "parent_runs": 4, "parents_finished": 4, "best_runs": 1,
                      "registry_versions": 1, "other_runs": 0},
           "output": {"lines": 0, "by_pattern": {}, "examples": [], "kinds": []},
           "other_output": {"lines": 0, "by_pattern": {"MLflow tracking failed": 0}, "examples": [], "kinds": []},
           "sizes": {"optuna_store_bytes": 30_000, "optuna_store": "journal file", "optuna_empty_bytes": 0,
                     "mlflow_store_bytes": 2_000_000, "mlflow_store": "SQLite file", "mlflow_empty_bytes": 950_000,
                     "artifacts_bytes": 10, "sweep_folders_bytes": 10}}
    for key, value in changes.items():
        *path, last = key.split(".")
        target = row
        for part in path:
            target = target[part]
        target[last] = value
    return row


def test_load_checks_fail_on_a_dead_worker_an_overshoot_a_duplicate_run_or_a_lock_error(tmp_path):
    from ops import load

    assert load.judge(_load_row(), 12, 4) == {"optuna": True, "mlflow": True, "workers": True}
    # a worker killed mid-trial (what a kill -9 of one command gave on the journal): its trial stays
    # RUNNING, the budget ends one short, its MLflow run stays RUNNING, its exit code is -9
    dead = _load_row(**{"exit_codes": [0, -9, 0, 0], "optuna.counted": 11,
                        "optuna.by_state": {"COMPLETE": 11, "RUNNING": 1}, "mlflow.running": 1,
                        "mlflow.parents_finished": 3})
    assert load.judge(dead, 12, 4) == {"optuna": False, "mlflow": False, "workers": False}
    assert load.judge(_load_row(**{"optuna.counted": 13, "optuna.trials": 13, "mlflow.trial_runs": 13}),
                      12, 4)["optuna"] is False  # one trial beyond the budget
    duplicated = _load_row(**{"mlflow.duplicate_trial_runs": 1, "mlflow.trial_runs": 13})
    assert load.judge(duplicated, 12, 4)["mlflow"] is False
    assert load.judge(_load_row(**{"optuna.by_state": {"COMPLETE": 12, "FAIL": 1}, "optuna.trials": 13,
                                   "mlflow.trial_runs": 13}), 12, 4)["optuna"] is False
    assert load.judge(_load_row(**{"optuna.repeated_configurations": 3}), 12, 4)["optuna"] is False  # shared seeds
    assert load.judge(_load_row(**{"optuna.reference_trials": 2}), 12, 4)["optuna"] is False  # enqueued twice

    err = tmp_path / "worker-2" / "worker.err"
    err.parent.mkdir()
    err.write_text("progress 3/12 | a clock and a block are fine\n"
                   "sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) database is locked\n"
                   "optuna: LockError while appending\n")
    scan = load.scan_output([err, tmp_path / "absent.err"], load.LOCK_PATTERNS)
    assert scan["lines"] == 2 and scan["by_pattern"]["database is locked"] == 1
    assert scan["by_pattern"]["lock"] == 2 and scan["by_pattern"]["OperationalError"] == 1
    assert load.judge(_load_row(output=scan), 12, 4)["workers"] is False

    targets = load.targets_of(dead, 12, 4)
    assert [t["met"] for t in targets] == [False, False, False, None]
    assert "RUNNING 1" in targets[0]["note"] and "[0, -9, 0, 0]" in targets[2]["note"]
    skipped = load.targets_of({"backend": "postgres", "skipped": "no PostgreSQL"}, 12, 4)
    assert all(t["met"] is None and "no PostgreSQL" in t["note"] for t in skipped)
    figures = {"n_trials": 12, "workers": 4, "epochs": 2, "model": "plain",
               "rows": [dict(dead, **load.rates(dead)), {"backend": "postgres", "skipped": "no PostgreSQL"}]}
    common.write_result(tmp_path / "load.json", "load", True, 0.0, figures, targets + skipped, [])
    md = report.write_markdown(tmp_path, tmp_path / "BENCHMARKS.md").read_text()
    assert "## load (quick)" in md and "| journal | 11 / 12 | COMPLETE 11, RUNNING 1 |" in md
    assert "| postgres | skipped: no PostgreSQL |" in md and "| journal | journal file 0.03 MiB |" in md


@pytest.mark.slow
@pytest.mark.ml100k
@pytest.mark.parametrize("backend", ["journal", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_load_quick_gives_exact_counts_and_no_lock_errors(backend, tmp_path, ml100k_cache):
    """ops.load --quick for real: 4 worker commands on 12 trials of ML-100K u1, on the journal
    file (SQLite MLflow store) or on PostgreSQL (an mlflow server on PostgreSQL too)."""
    import os
    import subprocess
    import sys

    from ops import load

    if backend == "postgres":
        from pg import require_bindir

        require_bindir()  # skips without PostgreSQL; fails in CI
    out = tmp_path / "load.json"
    env = {**os.environ, common.TMP_ENV: str(tmp_path / "scratch")}
    proc = subprocess.run([sys.executable, "-m", "ops.load", "--quick", "--backends", backend, "--out", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    result = json.loads(out.read_text())
    [row] = result["figures"]["rows"]
    assert not row.get("skipped"), row
    assert row["checks"] == {"optuna": True, "mlflow": True, "workers": True}, json.dumps(row, indent=1)[:6000]
    assert row["optuna"]["counted"] == row["optuna"]["trials"] == 12 and row["optuna"]["by_state"] == {"COMPLETE": 12}
    assert row["mlflow"]["trial_runs"] == 12 and row["mlflow"]["duplicate_trial_runs"] == 0
    assert row["output"]["lines"] == 0 and row["exit_codes"] == [0, 0, 0, 0]
    assert sum(row["optuna"]["per_worker"]) == 12 and row["optuna"]["reference_trials"] == 1
    assert row["sizes"]["optuna_store_bytes"] > 0 and row["sizes"]["mlflow_store_bytes"] > 0
    assert [t["met"] for t in result["targets"]] == [True, True, True, None]
    for key in ("server_log", "postgres_log"):  # PostgreSQL: every server-side error is one the writer expects
        for kind, _n in row.get(key, {}).get("kinds", []):
            assert load.explain(kind), (key, kind)
    md = report.write_markdown(tmp_path, tmp_path / "BENCHMARKS.md").read_text()
    assert f"| {backend} | 12 / 12 | COMPLETE 12 |" in md


def test_sweep_efficiency_compares_the_time_each_arm_first_reaches_random_searchs_best_plus_a_seed_sd():
    from bench.sweep_efficiency import compare, summed

    def arm(name, reports, seed=0, wall=60.0):
        return {"arm": name, "model": "m", "seed": seed, "trials": 3, "pruned": 0, "wall_s": wall, "reports": reports}

    # (seconds, trial, epoch, val RMSE): random's best R = 0.90 at 30 s, 0.9008 already at 20 s; the
    # default has 0.9005 at 10 s and R only at 40 s; a report after random's wall time W does not count
    rnd = arm("random", [[5.0, 0, 1, 0.95], [20.0, 1, 1, 0.9008], [30.0, 2, 1, 0.90], [50.0, 3, 1, 0.92]])
    dft = arm("default", [[4.0, 0, 1, 0.96], [10.0, 1, 1, 0.9005], [40.0, 2, 1, 0.90], [61.0, 3, 1, 0.85]])
    row = compare(rnd, dft, sd=0.001)
    assert row["R"] == 0.90 and row["T"] == 0.901 and row["wall_s"] == 60.0
    assert row["t_random_s"] == 20.0 and row["t_default_s"] == 10.0 and row["ratio"] == 2.0  # to T = R + sd
    assert row["t_random_R_s"] == 30.0 and row["t_default_R_s"] == 40.0  # to R itself
    assert (row["best_random"], row["best_default"]) == (0.90, 0.90)  # 0.85 came after W
    # without the seed sd the bar is R: the default gets there later than random
    assert compare(rnd, dft)["ratio"] == 0.75
    # a default that never reaches T within W: the ratio is only bounded, and the sums count W and say so
    late = compare(rnd, arm("default", [[4.0, 0, 1, 0.93]]), sd=0.001)
    assert late["ratio"] is None and late["ratio_below"] == round(20.0 / 60.0, 3) and late["t_default_s"] is None
    per_seed = summed([row, {**late, "seed": 1}])
    assert per_seed[0] == {"t_random_s": 20.0, "t_default_s": 10.0, "ratio": 2.0, "upper_bound": False}
    assert per_seed[1]["t_default_s"] == 60.0 and per_seed[1]["upper_bound"] is True
    assert summed([row], "t_random_R_s", "t_default_R_s")[0]["ratio"] == 0.75


def test_sweep_efficiency_anytime_check_finds_the_budgets_where_the_default_is_behind():
    from bench.sweep_efficiency import anytime

    def row(seed, wall):
        return {"model": "m", "seed": seed, "wall_s": wall}

    # seed 0: the default leads until random's 0.89 at 100 s; seed 1: the default has nothing before 70 s
    curves = {"m": {("random", 0): [[10.0, 0, 1, 0.95], [100.0, 1, 1, 0.89]],
                    ("default", 0): [[10.0, 0, 1, 0.93], [130.0, 1, 1, 0.88]],
                    ("random", 1): [[50.0, 0, 1, 0.92]],
                    ("default", 1): [[70.0, 0, 1, 0.91]]}}
    got = anytime([row(0, 160.0), row(1, 150.0)], curves, start=60.0, step=30.0)["m"]
    assert got["budgets"] == [60.0, 90.0, 120.0, 150.0]  # up to the shortest wall time
    # 60 s: seed 0 -0.02, seed 1 inf (nothing yet): median inf; 90 s: -0.02, -0.01; 120 s: +0.04, -0.01
    assert got["gaps"][90.0] == -0.015 and got["gaps"][120.0] == 0.015 and got["gaps"][150.0] == -0.01
    assert got["behind"] == [60.0, 120.0]
    assert anytime([row(0, 50.0)], curves)["m"] == {"budgets": [], "gaps": {}, "behind": []}  # W under 60 s


def test_sweep_efficiency_reads_a_multi_worker_arms_epochs_from_the_mlflow_store(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from bench.sweep_efficiency import tracked_reports

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'm.db'}")
    client = MlflowClient()
    exp = client.create_experiment("mfexp-sweep-x")
    t0 = 1_800_000_000.0
    # two workers' trials, interleaved in time; a run without a trial number (a parent) is left out
    for number, epochs in ((0, [(2.0, 0.95), (4.0, 0.92)]), (1, [(3.0, 0.99), (5.0, 0.90), (70.0, 0.89)])):
        run = client.create_run(exp, tags={"optuna.trial_number": str(number)})
        for step, (t, v) in enumerate(epochs, start=1):
            client.log_metric(run.info.run_id, "val_rmse", v, timestamp=int((t0 + t) * 1000), step=step)
            client.log_metric(run.info.run_id, "train_rmse", 0.5, timestamp=int((t0 + t) * 1000), step=step)
    parent = client.create_run(exp)
    client.log_metric(parent.info.run_id, "val_rmse", 0.1, timestamp=int((t0 + 1) * 1000), step=1)
    # in time order, val RMSE only, the epoch after the 60 s budget dropped
    assert tracked_reports("mfexp-sweep-x", t0, 60.0) == [(2.0, 0, 1, 0.95), (3.0, 1, 1, 0.99), (4.0, 0, 2, 0.92),
                                                          (5.0, 1, 2, 0.90)]
    assert tracked_reports("mfexp-sweep-none", t0, 60.0) == []


def test_sweep_efficiency_bounds_what_pruning_can_make_of_random_searchs_own_trials():
    import optuna

    from bench.sweep_efficiency import hindsight, pruning_ceiling, replay, trial_spans

    # (seconds since the arm started, trial, epoch, val RMSE): three trials one after another; only the
    # third reaches R = 0.90, at its second epoch
    reports = [[3.0, 0, 1, 1.00], [5.0, 0, 2, 0.95], [7.0, 0, 3, 0.93],
               [10.0, 1, 1, 1.10], [12.0, 1, 2, 1.05], [14.0, 1, 3, 1.02],
               [17.0, 2, 1, 0.96], [19.0, 2, 2, 0.90]]
    assert trial_spans(reports)[1] == [(3.0, 1, 1.10), (5.0, 2, 1.05), (7.0, 3, 1.02)]  # from the trial's start
    # a pruner that knew the future stops trials 0 and 1 at their first report: 3 + 3 + 5 s
    assert pruning_ceiling(reports, 0.90) == 11.0
    assert pruning_ceiling(reports, 0.85) is None
    # a search that knew the winner (trial 2) and tried it first: its own 5 s; for 0.95, trial 0's own 5 s
    assert hindsight(reports, 0.90) == 5.0 and hindsight(reports, 0.95) == 5.0 and hindsight(reports, 0.85) is None
    assert hindsight(reports, 0.93) == 7.0
    # no pruning: the time as recorded
    assert replay(reports, 0.90, optuna.pruners.NopPruner) == 19.0
    # a median pruner after one trial stops trial 1 at epoch 1 (1.10 > 1.00): 7 + 3 + 5 s
    median = lambda: optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)  # noqa: E731
    assert replay(reports, 0.90, median) == 15.0
    # a pruner that stops the trial that would reach R (0.96 at its epoch 1) has no time to R on these draws
    assert replay(reports, 0.90, lambda: optuna.pruners.ThresholdPruner(upper=0.955)) is None


def test_sweep_efficiency_reanalyse_merges_runs_and_scores_them_at_R_plus_the_seed_sd(tmp_path):
    from bench import sweep_efficiency as se

    def result(seed, noise=()):
        rnd = [[3.0, 0, 1, 1.00], [5.0, 0, 2, 0.9012], [8.0, 1, 1, 1.10], [10.0, 1, 2, 0.90]]
        dft = [[3.0, 0, 1, 1.00], [5.0, 0, 2, 0.95], [8.0, 1, 1, 0.90]]
        arm = lambda name: {"arm": name, "model": "plain", "seed": seed, "trials": 2, "pruned": 0,  # noqa: E731
                            "sampler": "tpe", "pruner": "median", "wall_s": 60.0}
        row = se.compare({**arm("random"), "reports": rnd}, {**arm("default"), "reports": dft})
        return {"section": se.SECTION, "quick": False, "command": "python -m bench.sweep_efficiency",
                "finished": f"2026-12-0{seed + 1}T00:00:00+0000", "wall_s": 100.0, "machine": {"cores": 2},
                "figures": {"models": ["plain"], "seeds": [seed], "trials": 2, "overrides": [], "rows": [row],
                            "noise": list(noise), "curves": {"plain": {f"random:{seed}": rnd, f"default:{seed}": dft}}}}

    def reanalysed(*results):
        paths = []
        for i, r in enumerate(results):
            paths.append(tmp_path / f"r{i}.json")
            paths[-1].write_text(json.dumps(r))
        out = tmp_path / "out" / "sweep_efficiency.json"
        assert se.main(["--reanalyse", *map(str, paths), "--out", str(out)]) == 0
        return json.loads(out.read_text())

    merged = reanalysed(result(0), result(1))
    f = merged["figures"]
    assert f["seeds"] == [0, 1] and [r["seed"] for r in f["rows"]] == [0, 1] and f["sd"] == {}
    # no seed sd measured: T = R; random reached 0.90 at 10 s, the default at 8 s; stopping trial 0 at
    # its first epoch: 3 + 5 s; random's winner (trial 1) alone reaches it in its own 10 - 5 s
    assert f["per_seed"]["0"]["ratio"] == 1.25 and f["rows"][0]["t_ceiling_s"] == 8.0 and f["ceiling_ratio"] == 1.25
    assert f["rows"][0]["t_hindsight_s"] == 5.0 and f["hindsight_ratio"] == 2.0
    assert any(t["name"].startswith("hindsight") for t in merged["targets"])
    assert merged["wall_s"] == 200.0 and merged["finished"] == "2026-12-02T00:00:00+0000"  # the runs', not now
    assert any("re-derived" in n for n in merged["notes"])
    # random's best configuration trained again: sd over seeds 0.90 / 0.902 = 0.00141, T = 0.90141, which
    # random's trial 0 reached at 5 s, the default only at 8 s
    noise = [{"model": "plain", "seed": 0, "trial": 1, "R": 0.90,
              "runs": [{"train_seed": 0, "val_rmse": 0.90}, {"train_seed": 1, "val_rmse": 0.902}]}]
    f = reanalysed(result(0, noise), result(1))["figures"]
    assert f["sd"] == {"plain": 0.00141} and f["rows"][1]["T"] == 0.90141
    assert f["per_seed"]["1"]["ratio"] == 0.625 and f["ratio"] == 0.625 and f["ratio_R"] == 1.25
    with pytest.raises(SystemExit, match="more than one"):
        reanalysed(result(0), result(0))
    old = result(0)
    del old["figures"]["trials"]  # a result from before the trial budget
    with pytest.raises(SystemExit, match="trial budget"):
        reanalysed(old)


def test_sweep_efficiency_seed_luck_summary_counts_other_seeds_against_R():
    from bench.sweep_efficiency import noise_summary, seed_sd

    rows = [{"model": "m", "seed": 0, "trial": 3, "R": 0.900,
             "runs": [{"train_seed": 0, "val_rmse": 0.900}, {"train_seed": 1, "val_rmse": 0.902},
                      {"train_seed": 2, "val_rmse": 0.8995}]},
            {"model": "m", "seed": 1, "trial": 0, "R": 0.910,
             "runs": [{"train_seed": 0, "val_rmse": 0.9101}, {"train_seed": 1, "val_rmse": 0.9105},
                      {"train_seed": 2, "val_rmse": 0.913}]}]
    s = noise_summary(rows)
    # seed 0 is the recorded run, not counted; of the other four runs one reaches R
    assert (s["retrained"], s["reach_R"]) == (4, 1)
    assert s["mean_above_R"] == round((0.002 - 0.0005 + 0.0005 + 0.003) / 4, 5)
    assert s["max_repeat_diff"] == 0.0001
    # the model's seed sd: the median of the two rows' sds over their three seeds
    sds = [0.0013228757, 0.0015716234]
    assert seed_sd(rows) == {"m": round(sum(sds) / 2, 5)}


def test_sweep_efficiency_retrains_a_trial_the_budget_cut_for_the_epochs_it_had():
    from bench.sweep_efficiency import budget_cut

    # trial 1 stopped on its own after 3 epochs; trial 2, the arm's last, ran 2 before the budget ended
    reports = [[3.0, 0, 1, 1.0], [5.0, 1, 1, 0.95], [6.0, 1, 2, 0.93], [7.0, 1, 3, 0.94], [9.0, 2, 1, 0.96],
               [11.0, 2, 2, 0.92]]
    assert budget_cut(reports, 2) == 2
    assert budget_cut(reports, 1) is None  # not the last: it ended on its own, retrained in full


@pytest.mark.slow
@pytest.mark.ml100k
def test_sweep_efficiency_retrain_honours_the_epoch_cap(ml100k_cache, tmp_path, monkeypatch):
    from bench import sweep_efficiency as se

    monkeypatch.setenv("MFEXP_BENCH_TMP", str(tmp_path))
    extra = ["train.epochs=3", "train.patience=null", "train.batch_size=choice(1024)"]
    full = se.retrain("biased", 4, 0, [0], extra)
    capped = se.retrain("biased", 4, 0, [0], extra, epochs=2)
    assert full["runs"][0]["epochs"] == 3 and capped["runs"][0]["epochs"] == 2 and capped["epochs_cap"] == 2
    assert se.retrain("biased", 4, 0, [0], extra, epochs=5)["runs"][0]["epochs"] == 3  # a cap above the budget: none


@pytest.mark.slow
@pytest.mark.ml100k
def test_sweep_efficiency_redraws_exactly_what_the_random_arm_tried(ml100k_cache, tmp_path):
    """Seed luck retrains random search's best trial from its draws alone: they must be the very
    configurations the random arm's worker loop ran."""
    import os
    import subprocess
    import sys

    from bench import sweep_efficiency as se

    env = {**os.environ, "MFEXP_BENCH_TMP": str(tmp_path)}
    extra = ["train.epochs=1", "train.batch_size=choice(512,1024)"]
    out = subprocess.run([sys.executable, "-m", "bench.sweep_efficiency", "--child", "random", "--model", "biased",
                          "--seed", "4", "--trials", "4", *extra],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)  # its ./mlruns
    assert out.returncode == 0, out.stderr[-2000:]
    ran = common.last_json_line(out.stdout)["params"]
    assert len(ran) == 4 and ran[0]
    drawn = se.random_draws("biased", 4, len(ran), extra)
    assert [{k: d[k] for k in r} for r, d in zip(ran, drawn)] == ran
    assert se.random_draws("biased", 5, len(ran), extra)[:2] != drawn[:2]  # the seed matters


@pytest.mark.slow
@pytest.mark.ml100k
def test_sweep_efficiency_stops_the_default_arm_when_the_random_arm_ends(ml100k_cache, tmp_path, monkeypatch):
    """Both arms get the same wall time W: the random arm runs its trials, and the default arm beside it
    stops when it ends (capped at 120 s here: without the stop it would run on to the cap)."""
    from bench import sweep_efficiency as se

    monkeypatch.setenv("MFEXP_BENCH_TMP", str(tmp_path))
    arms = se.run_arms("biased", 4, 8, 120.0, se.QUICK_OVERRIDES, [])  # W: a few seconds
    rnd, dft = arms["random"], arms["default"]
    assert rnd["trials"] == 8 and rnd["cut"] is False and rnd["reports"]
    assert dft["reports"]  # (its last trial may or may not be cut: the stop can come between two trials)
    assert dft["reports"][-1][0] < rnd["wall_s"] + 15.0 < 120.0  # started together, stopped soon after W
    assert not list(tmp_path.glob("stop-*"))
    # a lever's run reuses that random arm: the default arm alone, for the random arm's W
    again = se.run_arms("biased", 4, 8, 120.0, se.QUICK_OVERRIDES, [], earlier=rnd)
    assert again["random"] is rnd
    assert rnd["wall_s"] - 3.0 < again["default"]["reports"][-1][0] < rnd["wall_s"] + 15.0


def test_sweep_efficiencys_full_run_fits_its_section_timeout():
    from bench.sections import DEFAULT_TIMEOUT, timeout_of
    from bench.sweep_efficiency import CAP

    # an arm runs at most CAP seconds; the section's full run (BENCHMARKS.md, sweep_efficiency) needs hours
    assert timeout_of("sweep_efficiency") >= CAP > DEFAULT_TIMEOUT
    assert timeout_of("throughput") == DEFAULT_TIMEOUT
    assert timeout_of("sweep_efficiency", 60.0) == 60.0  # --timeout wins
