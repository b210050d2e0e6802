"""`python -m mfexp.recommend [key=value ...]`: top-N recommendations from a tracked model.

    python -m mfexp.recommend sweep.name=default user=1 n=10      # the sweep's champion
    python -m mfexp.recommend sweep.name=default model=mlp user=1 # that model's best run
    python -m mfexp.recommend run_id=<id> user=1 n=20             # any run with a logged model
    python -m mfexp.recommend sweep.name=default similar=50 n=10  # items nearest item 50

Keys: sweep.name (default: default), model, run_id, user, n (default 10), similar,
tracking.uri (default: $MLFLOW_TRACKING_URI, else MLflow's default store).

The champion is `models:/mfexp-<sweep>-champion@champion` (see mfexp.track.registry); for a sweep
recorded before the registry, the best run (tag mfexp.best=true) with the lowest validation RMSE.
The user's rated items are those of the training data the run used (its train part and
validation holdout), re-loaded from the run's logged config.yaml; the model scores every item
for the user in one vectorised call and rated items are left out. Ids are original ids
(MovieLens user and movie ids). similar= ranks items by the cosine of their learned item
vectors (the embedding; for mlp/dropout the item tower's output, which meets the user's).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Optional, Sequence

from omegaconf import OmegaConf

from mfexp import cli
from mfexp.errors import ConfigError, friendly_errors
from mfexp.scoring import Recommendation, index_of, rated_items, recommend, similar
from mfexp.track.runs import load_run, resolve_run
from mfexp.track.tracker import use_store

PROG = "python -m mfexp.recommend"


@dataclass
class _SweepName:
    name: str = "default"


@dataclass
class _TrackingUri:
    uri: Optional[str] = None


@dataclass
class RecommendArgs:
    """The keys of `python -m mfexp.recommend` (see the module docstring)."""

    sweep: _SweepName = field(default_factory=_SweepName)
    model: Optional[str] = None
    run_id: Optional[str] = None
    user: Optional[int] = None
    n: int = 10
    similar: Optional[int] = None
    tracking: _TrackingUri = field(default_factory=_TrackingUri)


def parse_args(argv: Sequence[str]) -> RecommendArgs:
    cfg, given = cli.apply_overrides(RecommendArgs, argv, PROG)
    args: RecommendArgs = OmegaConf.to_object(cfg)
    if args.run_id and given & {"model", "sweep.name"}:
        raise ConfigError("give run_id= alone, or sweep.name= (with model=), not both.")
    if args.user is None and args.similar is None:
        raise ConfigError("say whom to recommend for (user=<id>) or which item to compare (similar=<item id>).")
    if args.n < 1:
        raise ConfigError(f"n must be >= 1, got {args.n}.")
    return args


def format_lines(recs: list[Recommendation], value: str) -> list[str]:
    width = max((len(r.title) for r in recs if r.title), default=0)
    width = min(width, 60)
    lines = []
    for r in recs:
        title = f"  {(r.title or '')[:60]:<{width}}" if width else ""
        lines.append(f"{r.rank:>3}  {r.item_id:>7}{title}  {value} {r.score:.3f}")
    return lines


@friendly_errors
def main(argv: Sequence[str] | None = None) -> int:
    line = cli.parse_command_line(argv, PROG)
    if line.help:
        print(cli.help_text(PROG, __doc__))
        return 0
    opts = parse_args(line.overrides)
    if line.cfg_job:
        print(OmegaConf.to_yaml(OmegaConf.structured(opts)), end="")
        return 0
    cli.quiet_libraries()
    if opts.tracking.uri:
        use_store(opts.tracking.uri)
    run_id = opts.run_id or resolve_run(opts.sweep.name, opts.model)
    loaded = load_run(run_id)
    model = loaded.trained.model.name
    source = f"run {run_id}" if opts.run_id else f"sweep {opts.sweep.name}, run {run_id}"
    if opts.user is not None:
        recs = recommend(loaded, opts.user, opts.n)
        n_rated = len(rated_items(loaded.data, index_of(loaded.trained.user_ids, opts.user)))
        print(f"top {len(recs)} for user {opts.user} ({model}, {source}; {n_rated} rated items left out):")
        print("\n".join(format_lines(recs, "predicted")))
    if opts.similar is not None:
        item = opts.similar
        recs = similar(loaded, item, opts.n)
        title = loaded.title(item)
        print(f"{len(recs)} items most similar to item {item}{f' ({title})' if title else ''} "
              f"by cosine of item vectors ({model}, {source}):")
        print("\n".join(format_lines(recs, "cosine")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
