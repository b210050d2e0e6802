"""mfexp.sweep.report: report.md and PNGs from small in-memory Optuna studies."""
from __future__ import annotations

import logging
import re

import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from mfexp.sweep.report import best_so_far, overall_best, summary_table, write_report
from mfexp.sweep.results import ModelOutcome

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DISTS = {"k": IntDistribution(8, 128, log=True), "lr": FloatDistribution(1e-4, 1e-1, log=True)}


def _study(trials: list[tuple[TrialState, dict, float | None]], reference: float | None = None) -> optuna.Study:
    """A study shaped like a default sweep's: trial 0 the tutorial's reference (enqueued with fixed
    values, so no params, user attr mfexp.reference) when `reference` is its value, then sampled trials."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize")
    if reference is not None:
        study.add_trial(create_trial(params={}, distributions={}, value=reference,
                                     user_attrs={"mfexp.reference": "tutorial"}))
    for state, params, value in trials:
        study.add_trial(create_trial(
            params=params, distributions={k: DISTS[k] for k in params}, state=state,
            value=value if state == TrialState.COMPLETE else None,
            intermediate_values={0: 1.2} if state == TrialState.PRUNED else {}))
    return study


@pytest.fixture
def studies() -> dict[str, optuna.Study]:
    C, P, F = TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL
    plain = _study([(C, {"k": 16, "lr": 0.01}, 0.98), (P, {"k": 32, "lr": 0.05}, None),
                    (C, {"k": 64, "lr": 0.0021234}, 0.95), (F, {"k": 8, "lr": 0.001}, None),
                    (C, {"k": 32, "lr": 0.003}, 0.96)], reference=1.02)
    mlp = _study([(C, {"k": 64, "lr": 0.001}, 0.93)], reference=0.97)  # a single sampled trial
    return {"plain": plain, "mlp": mlp}


@pytest.fixture
def outcomes() -> list[ModelOutcome]:
    # plain has the better TEST RMSE, mlp the better VAL RMSE: selection must pick mlp.
    return [
        ModelOutcome(model="plain", study_name="s-plain", best_val_rmse=0.95, best_trial=2,
                     best_params={"k": 64, "lr": 0.0021234}, test_rmse=0.9123, n_complete=3,
                     n_pruned=1, n_failed=1, wall_time_s=125.0,
                     best_config_path="sweeps/demo/best-plain.yaml",
                     ranking={"test_precision_at_10": 0.0812, "test_recall_at_10": 0.05, "test_ndcg_at_10": 0.0903,
                              "test_coverage_at_10": 0.2315}),
        ModelOutcome(model="mlp", study_name="s-mlp", best_val_rmse=0.93, best_trial=0,
                     best_params={"k": 64, "lr": 0.001}, test_rmse=0.9501, n_complete=1,
                     wall_time_s=12.34, best_config_path="sweeps/demo/best-mlp.yaml"),
        ModelOutcome(model="custom", study_name="s-custom"),  # nothing ran, no tutorial figure
    ]


def test_write_report(tmp_path, studies, outcomes, caplog):
    import matplotlib.pyplot as plt

    folder = tmp_path / "out"
    facecolor = plt.rcParams["axes.facecolor"]
    with caplog.at_level(logging.WARNING, logger="mfexp.sweep.report"):
        paths = write_report(folder, "demo", outcomes, studies, 3725.0, "mfexp-sweep --name demo")
    assert plt.get_fignums() == []  # every figure closed
    assert plt.rcParams["axes.facecolor"] == facecolor  # optuna's ggplot style did not leak
    assert paths[0] == folder / "report.md"
    names = {p.name for p in paths[1:]}
    assert names == {"history-plain.png", "importance-plain.png", "parallel-plain.png",
                     "history-mlp.png", "best-so-far.png"}  # mlp: one sampled trial
    for name in ("importance-plain.png", "parallel-plain.png"):
        assert (folder / name).is_file()  # the reference trial (no params) did not hide them
    assert "importance" in caplog.text and "mlp" in caplog.text
    for p in paths[1:]:
        data = p.read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5000, p
    assert not list(folder.glob("*.tmp")) and not list(folder.glob(".*"))

    md = (folder / "report.md").read_text()
    assert "# Sweep report: demo" in md and "`mfexp-sweep --name demo`" in md
    assert "1h02m05s" in md
    comparison = md.split("## Other systems")[0]  # the quoted peers' table comes after
    rows = {line.split("|")[1].strip(): line for line in comparison.splitlines()
            if line.startswith("| ") and "---" not in line}
    assert set(rows) == {"model", "plain", "mlp", "custom"}
    assert ("| 0.9500 | 0.9123 | 1.0170 | -0.1047 | 0.0812 | 0.0500 | 0.0903 | 0.2315 | 3/1/1 | 2m05s "
            "| k=64, lr=0.002123 |") in rows["plain"]
    assert "| P@10 | R@10 | NDCG@10 | coverage |" in rows["model"]
    assert "| 0.9300 | 0.9501 | 0.9630 | -0.0129 | — | — | — | — | 1/0/0 | 12.3s | k=64, lr=0.001 |" in rows["mlp"]
    assert rows["custom"] == "| custom | — | — | — | — | — | — | — | — | 0/0/0 | 0.0s | — |"
    assert "Best overall (by validation RMSE): `mlp`**: val RMSE 0.9300, test RMSE 0.9501" in md
    assert "python -m mfexp.run --config-dir sweeps/demo --config-name best-plain" in md
    assert "python -m mfexp.run --config-dir sweeps/demo --config-name best-mlp" in md
    assert "best-custom" not in md
    for name in names:
        assert f"({name})" in md


def test_best_so_far_pruned_counts_but_does_not_improve(studies):
    xs, ys = best_so_far(studies["plain"])
    assert xs == [0, 1, 2, 3, 4, 5] and ys == [1.02, 0.98, 0.98, 0.95, 0.95, 0.95]


def test_overall_best_ignores_test_rmse(outcomes):
    assert overall_best(outcomes).model == "mlp"
    assert overall_best([ModelOutcome(model="x", study_name="x")]) is None


def test_summary_table(outcomes):
    lines = summary_table(outcomes).splitlines()
    assert len(lines) == 1 + len(outcomes)
    assert lines[0].startswith("model") and "|" not in "".join(lines)
    assert [line.split()[0] for line in lines[1:]] == ["plain", "mlp", "custom"]
    assert lines[1].index("0.9123") == lines[2].index("0.9501")  # columns aligned


def test_failing_plot_is_skipped_and_closed(tmp_path, caplog):
    import matplotlib.pyplot as plt

    from mfexp.sweep.report import _save_plot

    def boom():
        plt.figure()
        raise ValueError("no variance")

    with caplog.at_level(logging.WARNING, logger="mfexp.sweep.report"):
        assert _save_plot(tmp_path / "x.png", boom) is None
    assert "no variance" in caplog.text and not (tmp_path / "x.png").exists()
    assert plt.get_fignums() == []


def test_run_description_holds_the_comparison_table(outcomes):
    from mfexp.sweep.report import MAX_DESCRIPTION, run_description

    text = run_description("demo", outcomes, 65.0, "python -m mfexp.sweep")
    assert "| 0.9500 | 0.9123 | 1.0170 | -0.1047 | 0.0812 | 0.0500 | 0.0903 | 0.2315 | 3/1/1 |" in text
    assert "Best overall (by validation RMSE): `mlp`" in text and "1m05s" in text
    many = [ModelOutcome(model=f"m{i}", study_name="s", best_params={f"p{j}": j for j in range(40)})
            for i in range(40)]
    long = run_description("demo", many, 1.0, "x")
    assert len(long) <= MAX_DESCRIPTION and long.endswith("(cut: see report/report.md)")


def test_progress_line_counts_budgets_best_and_time_left():
    from mfexp.sweep.progress import SweepProgress

    now = [1000.0]
    plain = _study([(TrialState.COMPLETE, {"k": 16, "lr": 0.01}, 0.98)], reference=1.02)  # resumed: 2 done
    mlp = _study([])
    progress = SweepProgress({"plain": plain, "mlp": mlp}, n_trials=4, clock=lambda: now[0])
    assert "time left: after the first trial" in progress.line()
    now[0] += 30.0
    mlp.add_trial(create_trial(params={"k": 8}, distributions={"k": DISTS["k"]}, value=0.97))
    mlp.add_trial(create_trial(params={"k": 9}, distributions={"k": DISTS["k"]}, state=TrialState.PRUNED,
                               intermediate_values={0: 1.2}))
    mlp.add_trial(create_trial(params={"k": 9}, distributions={"k": DISTS["k"]}, state=TrialState.FAIL))
    line = progress.line()  # 4 of 8 done, 2 of them in 30 s: 4 left take ~60 s
    assert "progress 4/8: plain 2/4 · mlp 2/4" in line
    assert "best mlp 0.9700 (trial 0)" in line and "30.0s elapsed, ~1m00s left" in line
    progress.deadline = now[0] + 20.0  # sweep.timeout stops new trials sooner
    assert "~20.0s left" in progress.line()


def test_a_sweep_by_val_ndcg_is_compared_and_shown_by_it(outcomes):
    from dataclasses import replace

    by_rank = [replace(outcomes[0], objective="val_ndcg_at_10", best_objective=0.12),  # worse RMSE, better NDCG
               replace(outcomes[1], objective="val_ndcg_at_10", best_objective=0.08)]
    assert overall_best(by_rank).model == "plain"
    lines = summary_table(by_rank).splitlines()
    assert lines[0].split("  ")[:2] == ["model", "best val NDCG@10"]
    assert lines[1].split()[1] == "0.1200"
    from mfexp.sweep.report import run_description

    assert "Best overall (by validation NDCG@10): `plain`**: val NDCG@10 0.1200, test NDCG@10 0.0903" in \
        run_description("demo", by_rank, 1.0, "x")


def test_report_flags_a_budget_that_ran_out_and_quotes_peer_figures(tmp_path):
    from mfexp.sweep.report import write_report
    from mfexp.sweep.results import ModelOutcome

    outcomes = [ModelOutcome(model="fm", study_name="s-fm", best_val_rmse=0.88, best_trial=3, n_complete=2,
                             budget_exhausted=True),
                ModelOutcome(model="plain", study_name="s-plain", best_val_rmse=0.91, best_trial=1, n_complete=2)]
    text = write_report(tmp_path, "s", outcomes, {}, 1.0, "cmd")[0].read_text()
    flagged = [line for line in text.splitlines() if line.startswith("- ⚠")]
    assert len(flagged) == 1 and "`fm`" in flagged[0] and "trial (3)" in flagged[0]
    assert "| myFM 0.4 Bayesian FM rank 10 + implicit + side features + day (untuned) | 0.8828 |" in text
    # where and how each figure was had, in words a user can follow: no reference to an issue tracker
    assert "| Surprise SVD++ defaults | 0.9330 | measured by mfexp's developers on their 2-core machine, outside " \
           "mfexp: trained on GroupLens' u1.base, tested on u1.test, Surprise with its default settings |" in text
    assert not re.search(r"issue\W*\d", text, re.IGNORECASE), text


def test_history_plot_shows_pruned_trials_and_the_reference_apart(studies):
    """Optuna's own history plot drops pruned trials and labels trials 0.5, 1.5: ours shows every
    finished trial (a pruned one at the value it had when stopped), the reference trial apart."""
    import matplotlib.pyplot as plt

    from mfexp.sweep.report import _draw_history

    ax = _draw_history("plain", studies["plain"])
    try:
        points = {c.get_label(): c.get_offsets().tolist() for c in ax.collections}
        assert points["reference"] == [[0, 1.02]]
        assert points["complete"] == [[1, 0.98], [3, 0.95], [5, 0.96]]
        assert points["pruned (value when stopped)"] == [[2, 1.2]]
        best = next(line for line in ax.get_lines() if line.get_label() == "best so far")
        assert list(best.get_ydata()) == [1.02, 0.98, 0.98, 0.95, 0.95, 0.95]
        assert ax.get_ylabel() == "val RMSE" and "1 failed" in ax.get_title()
        ax.figure.canvas.draw()
        assert all(float(t).is_integer() for t in ax.get_xticks())
    finally:
        plt.close("all")


MODELS = ("plain", "mlp", "dropout", "biased")


def _one_trial_each() -> dict[str, optuna.Study]:
    """A sweep that ran one trial per model (the default sweep on a busy machine): each model's reference."""
    return {m: _study([], reference=0.95 + i / 100) for i, m in enumerate(MODELS)}


def _visible_ticks(ax) -> list[float]:
    ax.figure.canvas.draw()
    lo, hi = ax.get_xlim()
    return [float(t) for t in ax.get_xticks() if lo <= t <= hi]


def test_one_trial_per_model_keeps_whole_trial_numbers_on_the_plots():
    import matplotlib.pyplot as plt

    from mfexp.sweep.report import _draw_best_so_far, _draw_history

    studies = _one_trial_each()
    try:
        for ax in (_draw_best_so_far(studies), _draw_history("plain", studies["plain"])):
            assert _visible_ticks(ax) == [0.0], ax.get_xticks()  # trial 0, not -0.045 ... 0.045
        two = _study([(TrialState.COMPLETE, {"k": 16, "lr": 0.01}, 0.9)], reference=0.95)
        assert _visible_ticks(_draw_best_so_far({"plain": two})) == [0.0, 1.0]
    finally:
        plt.close("all")


def test_plots_skipped_for_lack_of_spread_are_said_in_one_line(tmp_path, caplog):
    outcomes = [ModelOutcome(model=m, study_name=f"s-{m}", best_val_rmse=0.95, best_trial=0, n_complete=1)
                for m in MODELS]
    with caplog.at_level(logging.WARNING, logger="mfexp.sweep.report"):
        paths = write_report(tmp_path, "busy", outcomes, _one_trial_each(), 60.0, "cmd")
    assert {p.name for p in paths[1:]} == {*(f"history-{m}.png" for m in MODELS), "best-so-far.png"}
    assert [r.getMessage() for r in caplog.records] == [
        "no importance or parallel-coordinate plot for plain, mlp, dropout, biased: each needs >= 2 complete "
        "sampled trials (besides the reference) and a searched parameter that varies"]


def test_a_reference_trial_that_wins_shows_its_fixed_values():
    """The reference trial is enqueued with fixed values (no params): the report names it and shows
    those values, where it showed a dash."""
    from mfexp.sweep.report import _best_params

    o = ModelOutcome(model="biased", study_name="s", best_val_rmse=0.9068, best_trial=0, best_reference="tutorial",
                     best_params={"train.optimizer": "sgd", "train.lr": 0.05})
    assert _best_params(o) == "reference (tutorial): train.optimizer=sgd, train.lr=0.05"
    assert "reference (tutorial): train.optimizer=sgd" in summary_table([o])


def test_a_model_whose_every_trial_was_pruned_still_gets_its_history(tmp_path):
    pruned = _study([(TrialState.PRUNED, {"k": 16, "lr": 0.01}, None), (TrialState.PRUNED, {"k": 32, "lr": 0.02}, None)])
    paths = write_report(tmp_path, "demo", [ModelOutcome(model="plain", study_name="s", n_pruned=2)],
                         {"plain": pruned}, 1.0, "cmd")
    assert {p.name for p in paths[1:]} == {"history-plain.png", "best-so-far.png"}
    empty = optuna.create_study()
    paths = write_report(tmp_path / "e", "demo", [ModelOutcome(model="plain", study_name="s")], {"plain": empty}, 1.0, "cmd")
    assert {p.name for p in paths[1:]} == {"best-so-far.png"}


def test_one_far_pruned_trial_does_not_squash_the_history_plot():
    """A slow starter pruned at val 1.5 once flattened every other trial into a line at the bottom:
    the scale is cut a little beyond the best 90% and the cut trials are drawn at its edge."""
    import matplotlib.pyplot as plt

    from mfexp.sweep.report import _draw_history

    C, P = TrialState.COMPLETE, TrialState.PRUNED
    trials = [(C, {"k": 16, "lr": 0.01}, 0.91 + i / 1000) for i in range(9)] + [(P, {"k": 32, "lr": 0.05}, None)]
    study = _study(trials)
    study.add_trial(create_trial(params={"k": 8}, distributions={"k": DISTS["k"]}, state=P,
                                 intermediate_values={3: 1.5}))
    ax = _draw_history("plain", study)
    try:
        off = next(c for c in ax.collections if "off the scale" in c.get_label())
        assert [x for x, _ in off.get_offsets().tolist()] == [10]  # the one at 1.5; 1.2 is within the best 90%
        assert 1.2 < ax.get_ylim()[1] < 1.5
        kept = next(c for c in ax.collections if c.get_label() == "complete")
        assert len(kept.get_offsets()) == 9
    finally:
        plt.close("all")
    ax = _draw_history("plain", _study(trials[:9]))  # nothing far off: nothing cut
    try:
        assert not [c for c in ax.collections if "off the scale" in c.get_label()]
    finally:
        plt.close("all")
