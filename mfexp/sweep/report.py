"""The sweep report: report.md (table, overall best, replay commands) plus PNG plots per model.

Selection is by validation RMSE only; the test RMSE is shown, never used to choose.
"""
from __future__ import annotations

import logging
import numbers
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import matplotlib
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import numpy as np
import optuna

from mfexp.metrics import mean_sd
from mfexp.sweep.ensemble import NAME
from mfexp.sweep.results import (ModelOutcome, PEER_FOLDS_SOURCE, PEER_FOLD_RMSE, PEER_RMSE, REFERENCE_ATTR,
                                 TUTORIAL_RMSE)

log = logging.getLogger(__name__)

DASH = "—"
HEADER = ["model", "best val RMSE", "test RMSE", "tutorial RMSE", "Δ vs tutorial", "P@10", "R@10",
          "NDCG@10", "coverage", "trials (complete/pruned/failed)", "wall time", "best params"]
RANKING = ("test_precision_at_10", "test_recall_at_10", "test_ndcg_at_10", "test_coverage_at_10")
NDCG_OBJECTIVE = "best val NDCG@10"  # a column of its own when a sweep chose by it
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
            optuna.trial.TrialState.FAIL)


# --- formatting -------------------------------------------------------------------------------
def _rmse(v: Optional[float]) -> str:
    return DASH if v is None else f"{v:.4f}"


def _delta(test: Optional[float], tutorial: Optional[float]) -> str:
    """Test RMSE minus the tutorial's (both are test-set figures); negative is better."""
    return DASH if test is None or tutorial is None else f"{test - tutorial:+.4f}"


def duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return DASH
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _value(v: Any) -> str:
    if isinstance(v, numbers.Real) and not isinstance(v, (numbers.Integral, bool)):
        return f"{float(v):.4g}"
    return str(v)


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_value(v)}" for k, v in params.items()) or DASH


def _best_params(o: ModelOutcome) -> str:
    """The best trial's sampled values; for a model's reference trial, its label and fixed values."""
    return f"reference ({o.best_reference}): {_params(o.best_params)}" if o.best_reference else _params(o.best_params)


def _header(outcomes: list[ModelOutcome]) -> list[str]:
    by_rank = any(o.objective == "val_ndcg_at_10" for o in outcomes)
    return HEADER[:1] + [NDCG_OBJECTIVE] + HEADER[1:] if by_rank else HEADER


def _row(o: ModelOutcome, header: list[str] = HEADER) -> list[str]:
    ranking = [_rmse(o.ranking.get(k)) for k in RANKING]
    row = [o.model, _rmse(o.best_val_rmse), _rmse(o.test_rmse), _rmse(o.tutorial_rmse),
           _delta(o.test_rmse, o.tutorial_rmse), *ranking, f"{o.n_complete}/{o.n_pruned}/{o.n_failed}",
           duration(o.wall_time_s), _best_params(o)]
    if NDCG_OBJECTIVE in header:
        row.insert(1, _rmse(o.best_objective if o.objective == "val_ndcg_at_10" else None))
    return row


def summary_table(outcomes: list[ModelOutcome]) -> str:
    """The report's table as aligned plain text: a header line, then one line per model."""
    header = _header(outcomes)
    rows = [header] + [_row(o, header) for o in outcomes]
    widths = [max(len(r[c]) for r in rows) for c in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows)


def _markdown_table(outcomes: list[ModelOutcome]) -> list[str]:
    esc = lambda cells: "| " + " | ".join(c.replace("|", r"\|") for c in cells) + " |"  # noqa: E731
    header = _header(outcomes)
    return [esc(header), "|" + "---|" * len(header)] + [esc(_row(o, header)) for o in outcomes]


def overall_best(outcomes: list[ModelOutcome]) -> Optional[ModelOutcome]:
    """The model with the best validation figure, by the sweep's objective (never by test figures)."""
    done = [o for o in outcomes if o.selection_value is not None]
    return min(done, key=lambda o: o.selection_value) if done else None


def _replay_lines(outcomes: list[ModelOutcome]) -> list[str]:
    lines = []
    for o in outcomes:
        if o.best_config_path:
            p = Path(o.best_config_path)
            lines.append(f"- `{o.model}`: `python -m mfexp.run --config-dir {p.parent.as_posix()} "
                         f"--config-name {p.stem}`")
    return lines or ["(no best configs were written)"]


def _best_line(outcomes: list[ModelOutcome]) -> str:
    best = overall_best(outcomes)
    if best is None:
        return "**Best overall:** none (no model completed a trial)."
    if best.objective == "val_ndcg_at_10":
        return (f"**Best overall (by validation NDCG@10): `{best.model}`**: val NDCG@10 "
                f"{_rmse(best.best_objective)}, test NDCG@10 {_rmse(best.ranking.get('test_ndcg_at_10'))}, "
                f"test RMSE {_rmse(best.test_rmse)}.")
    return (f"**Best overall (by validation RMSE): `{best.model}`**: val RMSE "
            f"{_rmse(best.best_val_rmse)}, test RMSE {_rmse(best.test_rmse)}.")


NOTE = ("The objective is measured on the validation holdout (val RMSE unless the sweep chose another); "
        "test figures are the best trial's network at its best epoch, evaluated once on the test part. "
        "Δ = test − tutorial. P@10, R@10, NDCG@10: top 10 of each test user among the items they had not "
        "rated, hits = test items rated 4 or more; coverage: share of the catalogue in some user's top 10.")


def _refit_lines(outcomes: list[ModelOutcome]) -> list[str]:
    refit = [f"`{o.model}`" for o in outcomes if o.refit]
    seeds = [f"`{o.model}` ({o.average_seeds})" for o in outcomes if o.average_seeds > 1]
    lines = []
    if refit:
        lines.append(f"- {', '.join(refit)} (sweep.refit): the chosen configuration was trained again on train + "
                     "holdout for its best epoch count; the test figure is of that network, the choice is still the "
                     "holdout's.")
    if seeds:
        lines.append(f"- {', '.join(seeds)} (sweep.average_seeds): the test figure is of the average of that many "
                     "seeds' networks of the chosen configuration.")
    return lines


def _budget_lines(outcomes: list[ModelOutcome]) -> list[str]:
    """A warning per model whose best trial was still improving when its epoch budget ran out."""
    return _refit_lines(outcomes) + [f"- ⚠ `{o.model}`: its best trial ({o.best_trial}) improved until its last allowed epoch "
            "(train.epochs): val RMSE was still falling, so a larger epoch budget would likely do better."
            for o in outcomes if o.budget_exhausted]


def _peer_lines() -> list[str]:
    return ["## Other systems on u1 (quoted, not run by mfexp)", "",
            "| system | u1.test RMSE | source |", "|---|---|---|",
            *[f"| {name} | {rmse:.4f} | {source} |" for name, rmse, source in PEER_RMSE], "",
            "Quoted for comparison only: a paper's figure follows that paper's own protocol; the others were "
            "trained on u1.base and tested on u1.test, the files mfexp's u1 figures use."]


def _render(sweep_name: str, outcomes: list[ModelOutcome], wall_time_s: float, command: str,
            plots: list[Path]) -> str:
    budget = _budget_lines(outcomes)
    return "\n".join([
        f"# Sweep report: {sweep_name}", "", f"Command: `{command}`", "",
        f"Total wall time: {duration(wall_time_s)}", "", *_markdown_table(outcomes), "",
        NOTE, "", _best_line(outcomes), "", *(budget + [""] if budget else []), *_peer_lines(), "",
        *fold_lines(outcomes),
        "## How to replay", "", *_replay_lines(outcomes), "", "## Plots", "",
        *[f"![{p.stem}]({p.name})" for p in plots], ""])


# --- sweep.folds: the choice on every listed fold (mfexp/sweep/folds.py) --------------------------------
def _fold_header(o: ModelOutcome) -> list[str]:
    f = o.folds
    return ["", *[f"{fold} (chosen on)" if fold == f.selection else fold for fold in f.rmse], "mean ± sd"]


def _mean_sd(values) -> str:
    mean, sd = mean_sd(values)
    return f"{mean:.4f} ± {sd:.4f}"


def _peer_fold_rows(folds: list[str]) -> list[list[str]]:
    """The peers' figures on the same folds, their mean over those folds; none off ML-100K's folds."""
    if not all(f in PEER_FOLD_RMSE[0][1] for f in folds):
        return []
    return [[name, *[f"{rmse[f]:.4f}" for f in folds], _mean_sd(rmse[f] for f in folds)]
            for name, rmse in PEER_FOLD_RMSE]


def _fold_cost(o: ModelOutcome, others: list[str]) -> str:
    if o.model == NAME:
        return (f"Cost: {duration(o.folds.cost_s)} fitting its weights on each fold's holdout and predicting; its "
                "members' trainings are counted under their models.")
    return (f"Cost: {duration(o.folds.cost_s)} of training on {', '.join(others)}; {o.folds.selection}'s figure is "
            "the sweep's one test evaluation of this choice.")


def fold_lines(outcomes: list[ModelOutcome]) -> list[str]:
    """The report's section for sweep.folds: a table per model (and the blend) with the peers beside it."""
    done = [o for o in outcomes if o.folds is not None]
    if not done:
        return []

    esc = lambda cells: "| " + " | ".join(c.replace("|", r"\|") for c in cells) + " |"  # noqa: E731
    selection = done[0].folds.selection
    total = sum(o.folds.cost_s for o in done)
    lines = ["## Across folds (sweep.folds)", "",
             f"Each configuration was chosen on {selection}'s holdout, and the other folds changed nothing. On each "
             "other fold it was trained on that fold's training part (its own holdout carved out as on "
             f"{selection}, implicit feedback and every derived feature from that training part only) for its best "
             "epoch count, and evaluated once on that fold's test part; the blend's weights were fit on each "
             "fold's own holdout. Test RMSE per fold; mean ± sd over the folds shown (sd with n−1). "
             f"Peers: {PEER_FOLDS_SOURCE}; their mean over the same folds. Cost of the other folds, all "
             f"models: {duration(total)}.", ""]
    for o in done:
        folds = list(o.folds.rmse)
        others = [f for f in folds if f != o.folds.selection]
        header = _fold_header(o)
        ours = [f"**{o.model}**, this sweep's choice", *[f"{v:.4f}" for v in o.folds.rmse.values()],
                f"**{_mean_sd(o.folds.rmse.values())}**"]
        lines += [f"### `{o.model}`", "", esc(header), "|" + "---|" * len(header), esc(ours),
                  *[esc(r) for r in _peer_fold_rows(folds)], "", _fold_cost(o, others), ""]
    return lines


def fold_summary(outcomes: list[ModelOutcome]) -> str:
    """The console's view of sweep.folds: one line per model (and the blend), then the peers."""
    done = [o for o in outcomes if o.folds is not None]
    folds = list(dict.fromkeys(f for o in done for f in o.folds.rmse))
    chosen_on = done[0].folds.selection if done else None
    rows = [["across folds", *[f"{f} (chosen on)" if f == chosen_on else f for f in folds], "mean ± sd", "cost"]]
    for o in done:
        rows.append([o.model, *[_rmse(o.folds.rmse.get(f)) for f in folds],
                     _mean_sd(o.folds.rmse.values()), duration(o.folds.cost_s)])
    rows += [[*r, ""] for r in _peer_fold_rows(folds)]
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows)
# --- end sweep.folds ---------------------------------------------------------------------------------


MAX_DESCRIPTION = 8000  # MLflow's longest tag value


def run_description(sweep_name: str, outcomes: list[ModelOutcome], wall_time_s: float, command: str) -> str:
    """The sweep parent run's MLflow description (markdown): the report's comparison table."""
    text = "\n".join([  # the best first: the UI shows a description's first lines until "Show more"
        _best_line(outcomes), "", f"Sweep `{sweep_name}`: `{command}`, {duration(wall_time_s)}.", "",
        *_markdown_table(outcomes), "", NOTE, "",
        "The full report with plots is this run's artifact `report/report.md`; each model's best is the "
        "child run tagged `mfexp.best=true`."])
    return text if len(text) <= MAX_DESCRIPTION else text[:MAX_DESCRIPTION - 40] + "\n\n(cut: see report/report.md)"


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- plots ------------------------------------------------------------------------------------
def _save_plot(path: Path, draw: Callable[[], Any]) -> Optional[Path]:
    """Run `draw` (makes pyplot figures; may return its Axes), save to `path`, close all it made.
    Any exception is logged and the plot skipped: a plot never fails the report."""
    matplotlib.use("Agg")

    before = set(plt.get_fignums())
    try:  # rc_context undoes optuna's global plt.style.use("ggplot") afterwards
        with warnings.catch_warnings(), plt.rc_context():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.simplefilter("ignore", UserWarning)  # matplotlib: flat axes of a fixed param
            drawn = draw()
            fig = getattr(drawn, "figure", None) or plt.gcf()
            fig.savefig(path, format="png", dpi=100, bbox_inches="tight")
        return path
    except Exception as e:  # noqa: BLE001 -- optuna/matplotlib raise various types
        log.warning("skipping plot %s: %s: %s", path.name, type(e).__name__, e)
        return None
    finally:
        for num in set(plt.get_fignums()) - before:
            plt.close(num)


def _complete(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def _searched(study: optuna.Study) -> optuna.Study:
    """The study's complete trials that were sampled, in an in-memory copy: reference trials
    (enqueued with fixed values and no params, user attr mfexp.reference) would otherwise empty
    the intersection of params that importance and parallel-coordinate plots are drawn over."""
    view = optuna.create_study(directions=study.directions)
    view.add_trials([t for t in _complete(study) if REFERENCE_ATTR not in t.user_attrs and t.params])
    return view


def _has_spread(study: optuna.Study) -> bool:
    """>= 2 complete trials and >= 1 param they all searched that takes more than one value."""
    trials = _complete(study)
    if len(trials) < 2:
        return False
    common = set.intersection(*(set(t.params) for t in trials))
    return any(len({repr(t.params[p]) for t in trials}) > 1 for p in common)


def _model_plots(folder: Path, model: str, study: optuna.Study, objective: str = "val_rmse",
                 without_spread: Optional[list[str]] = None) -> list[Path]:
    """A model's history plot, and its importance and parallel-coordinate plots when its trials
    have the spread they need (else the model is added to `without_spread`, said once by the caller)."""
    vis = optuna.visualization.matplotlib
    pruned = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,))
    if not _complete(study) and not any(t.intermediate_values for t in pruned):
        return []
    # a model whose every trial was pruned still gets its history: where each was stopped
    out = [_save_plot(folder / f"history-{model}.png", lambda: _draw_history(model, study, objective))]
    searched = _searched(study)
    if _has_spread(searched):
        for name, fn in (("importance", vis.plot_param_importances),
                         ("parallel", vis.plot_parallel_coordinate)):
            out.append(_save_plot(folder / f"{name}-{model}.png", lambda fn=fn: fn(searched)))
    elif without_spread is not None:
        without_spread.append(model)
    return [p for p in out if p is not None]


def _trial_axis(ax) -> None:
    """Whole trial numbers on the x axis, however few trials. MaxNLocator(integer=True) gives up on
    integers when fewer than 2 are in view: one trial per model got ticks at -0.045 ... 0.045."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    lo, hi = ax.get_xlim()
    if hi - lo < 1:  # a single trial number: give it a trial's width, not a sliver
        middle = (lo + hi) / 2
        ax.set_xlim(middle - 0.5, middle + 0.5)


OBJECTIVE_LABEL = {"val_rmse": "val RMSE", "val_ndcg_at_10": "val NDCG@10"}


def _draw_history(model: str, study: optuna.Study, objective: str = "val_rmse") -> Any:
    """Every finished trial of one model: complete ones at their objective, pruned ones at the value
    they had when stopped, the reference trial apart, and the best so far as a step line. (Optuna's
    own history plot shows complete trials only, on fractional trial ticks.)"""
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    trials = sorted(study.get_trials(deepcopy=False, states=FINISHED), key=lambda t: t.number)
    groups: dict[str, tuple[list[int], list[float]]] = {"complete": ([], []), "reference": ([], []),
                                                        "pruned (value when stopped)": ([], [])}
    for t in trials:
        if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None:
            key, value = ("reference" if REFERENCE_ATTR in t.user_attrs else "complete"), t.value
        elif t.state == optuna.trial.TrialState.PRUNED and t.intermediate_values:
            key, value = "pruned (value when stopped)", t.intermediate_values[max(t.intermediate_values)]
        else:
            continue
        groups[key][0].append(t.number)
        groups[key][1].append(value)
    best_x, best_y = best_so_far(study)
    n_failed = sum(t.state == optuna.trial.TrialState.FAIL for t in trials)

    fig, ax = plt.subplots(figsize=(7, 4.2))
    style = {"complete": dict(marker="o", color="C0"), "reference": dict(marker="*", s=140, color="C1"),
             "pruned (value when stopped)": dict(marker="x", color="0.55")}
    edge = _outlier_edge([v for _, ys in groups.values() for v in ys], maximize)
    on_scale = lambda y: edge is None or (y >= edge if maximize else y <= edge)  # noqa: E731
    off: list[int] = []
    for key, (xs, ys) in groups.items():
        keep = [(x, y) for x, y in zip(xs, ys) if on_scale(y)]
        off += [x for x, y in zip(xs, ys) if not on_scale(y)]
        if keep:
            ax.scatter(*zip(*keep), label=key, zorder=3, **style[key])
    if off:  # one pruned trial at 1.5 squashed the trials that matter into a line at the bottom
        ax.scatter(off, [edge] * len(off), marker="v" if maximize else "^", color="0.55", zorder=3,
                   label=f"{'below' if maximize else 'above'} {edge:.3f} (off the scale)")
    if best_x:
        ax.step(best_x, best_y, where="post", color="C3", linewidth=1.5, label="best so far", zorder=2)
    label = OBJECTIVE_LABEL.get(objective, objective)
    title = f"{model}: {label} per trial"
    if n_failed:
        title += f" ({n_failed} failed, not shown)"
    _trial_axis(ax)
    ax.set(xlabel="trial number", ylabel=label, title=title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    return ax


def _outlier_edge(values: list[float], maximize: bool) -> Optional[float]:
    """Where to cut the history plot's scale on the bad side: None when the values are not spread by a
    few bad ones; else a bit beyond the worst of the best 90%, so the trials near the best stay
    readable (the cut ones are drawn at the edge)."""
    if len(values) < 5:
        return None
    v = -np.asarray(values) if maximize else np.asarray(values)
    best, q90 = float(v.min()), float(np.quantile(v, 0.9))
    edge = q90 + 0.25 * (q90 - best)
    if v.max() <= best + 2 * (q90 - best) or q90 == best:
        return None
    return -edge if maximize else edge


def best_so_far(study: optuna.Study) -> tuple[list[int], list[float]]:
    """(trial numbers, best value so far) over finished trials; only COMPLETE ones improve it."""
    better = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
    xs, ys, best = [], [], None
    for t in sorted(study.get_trials(deepcopy=False, states=FINISHED), key=lambda t: t.number):
        if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None:
            best = t.value if best is None else better(best, t.value)
        if best is not None:
            xs.append(t.number)
            ys.append(best)
    return xs, ys


def _draw_best_so_far(studies: dict[str, optuna.Study], objective: str = "val_rmse") -> Any:
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (model, study) in enumerate(studies.items()):
        color = f"C{i % 10}"
        xs, ys = best_so_far(study)
        if xs:
            ax.step(xs, ys, where="post", color=color, marker="o" if len(xs) == 1 else ".", label=model)  # a lone point: visible
        if model in TUTORIAL_RMSE and objective == "val_rmse":  # the tutorial published test figures only
            ax.axhline(TUTORIAL_RMSE[model], color=color, linestyle="--", linewidth=1,
                       label=f"tutorial {model}, u1.test ({TUTORIAL_RMSE[model]})")
    label = OBJECTIVE_LABEL.get(objective, objective)
    _trial_axis(ax)
    ax.set(xlabel="trial number", ylabel=f"best {label} so far", title=f"Best {label} so far, per model")
    if ax.get_legend_handles_labels()[0]:  # beside the axes: inside, it hid the lines of the tutorial
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    ax.grid(alpha=0.3)
    return ax


# --- entry point ------------------------------------------------------------------------------
def write_report(folder: Path, sweep_name: str, outcomes: list[ModelOutcome],
                 studies: dict[str, optuna.Study], wall_time_s: float, command: str) -> list[Path]:
    """Write report.md and the PNGs into `folder`; return their paths, report.md first."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    order = [o.model for o in outcomes if o.model in studies]
    order += [m for m in studies if m not in order]
    ordered = {m: studies[m] for m in order}
    plots: list[Path] = []
    objectives = {o.model: o.objective for o in outcomes}
    objective = next(iter(objectives.values()), "val_rmse")
    without_spread: list[str] = []
    for model, study in ordered.items():
        plots += _model_plots(folder, model, study, objectives.get(model, "val_rmse"), without_spread)
    if without_spread:  # one line, however many models (a sweep of one trial per model: all of them)
        log.warning("no importance or parallel-coordinate plot for %s: each needs >= 2 complete sampled trials "
                    "(besides the reference) and a searched parameter that varies", ", ".join(without_spread))
    combined = _save_plot(folder / "best-so-far.png", lambda: _draw_best_so_far(ordered, objective))
    plots += [combined] if combined else []
    report = folder / "report.md"
    _write_atomic(report, _render(sweep_name, outcomes, wall_time_s, command, plots))
    return [report, *plots]
