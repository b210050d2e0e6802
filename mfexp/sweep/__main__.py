"""`python -m mfexp.sweep [overrides]`: search each model's hyperparameters with Optuna, record
everything in MLflow, evaluate each model's best once on the test part, write a report.

    python -m mfexp.sweep                                   # the default sweep (make sweep)
    python -m mfexp.sweep sweep=smoke                       # another named sweep, conf/sweep/
    python -m mfexp.sweep sweep.n_trials=30 sweep.models=[biased]
    python -m mfexp.sweep 'model.k=choice(32,64)'           # narrow (or add) a key in every space
    python -m mfexp.sweep 'train.momentum=interval(0.5,0.99)' train.optimizer=sgd

Plain overrides compose the config as for mfexp.run, and win over the search space: a key set
on the command line is removed from every space that fixes or searches it (said on the console).
Overrides whose value is a sweep expression (choice, range, interval, tag) edit every model's
search space instead: they replace the key, or add it.
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Sequence

from omegaconf import DictConfig

from mfexp import cli, interrupt
from mfexp.errors import friendly_errors
from mfexp.sweep.orchestrate import run_sweep
from mfexp.sweep.plan import PROG, compose_plan
from mfexp.train import quiet_mxnet

GROUPS = ("data", "model", "train", "tracking", "sweep")


def print_plan(root: DictConfig, raws: dict) -> None:
    """--cfg job: the composed sweep config, then each model's search space as the trials see it."""
    cli.print_config(root)
    print("# The search space of each model (its class's default < sweep.space.common < "
          "sweep.space.<model> < the command line):")
    for model, raw in raws.items():
        print(f"#   {model}:")
        for key, expr in raw.items():
            print(f"#     {key}: {expr}")


@friendly_errors
def main(argv: Sequence[str] | None = None) -> int:
    line = cli.parse_command_line(argv, PROG)
    if line.help:
        print(cli.help_text(PROG, __doc__, GROUPS))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("mfexp.train").setLevel(logging.WARNING)  # one line per trial, not per epoch
    cli.quiet_libraries()
    quiet_mxnet()  # MXNet's lazy_update note (the select phase trains here)
    plan, root, raws = compose_plan(line.overrides)
    if line.cfg_job:
        print_plan(root, raws)
        return 0
    started = time.time()
    interrupt.install()  # also here: with sweep.n_workers > 1 this process only waits for its workers
    try:
        run_sweep(plan)
    except KeyboardInterrupt:
        print(f"\nsweep {plan.sweep.name} interrupted after {time.time() - started:.0f}s: the running trials "
              "were marked FAIL (interrupted) and their MLflow runs KILLED. Run the same command again "
              "to resume.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
