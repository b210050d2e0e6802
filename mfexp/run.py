"""`python -m mfexp.run [overrides]`: train one model, record it in MLflow.

    python -m mfexp.run model=mlp train.epochs=20
    python -m mfexp.run model=biased train.optimizer=adam train.lr=2e-3 train.reg=0.1
    python -m mfexp.run --config-dir sweeps/default --config-name best-biased   # replay a sweep's best
    python -m mfexp.run model=fm data.split=all         # each of u1..u5 in turn: per-fold table, mean ± sd
    python -m mfexp.run data=file data.path=r.csv data.folds=5   # 5 seeded random folds, the same way
"""
# The command line only: the run itself is mfexp/experiment.py's `run(cfg)` (tests and sweeps call it).
from __future__ import annotations

import signal
import sys
import time
from typing import Optional, Sequence

from mfexp import cli, interrupt
from mfexp.errors import friendly_errors
from mfexp.experiment import run
from mfexp.train import quiet_mxnet


def interrupted_line(err: KeyboardInterrupt, seconds: float) -> str:
    """The one line mfexp.run ends with when interrupted."""
    signum = interrupt.pending()
    how = f" ({signal.Signals(signum).name})" if signum else ""
    run_id = getattr(err, "run_id", None)
    what = f"its MLflow run {run_id} was marked KILLED" if run_id else "nothing was recorded in MLflow"
    return f"mfexp.run interrupted{how} after {seconds:.0f}s: {what}. Run the same command again to train it anew."


PROG = "python -m mfexp.run"
GROUPS = ("data", "model", "train", "tracking")


@friendly_errors
def main(argv: Optional[Sequence[str]] = None) -> int:
    line = cli.parse_command_line(argv, PROG, config_files=True)
    if line.help:
        print(cli.help_text(PROG, __doc__, GROUPS, config_files=True))
        return 0
    cli.register_schema()
    dcfg = cli.compose(line.config_name or "config", line.overrides, PROG, config_dir=line.config_dir)
    if line.cfg_job:
        cli.print_config(dcfg)
        return 0
    interrupt.install()  # SIGTERM (a scheduler's stop) as Ctrl-C, and Ctrl-C even when started ignoring it
    started = time.monotonic()
    try:
        cli.log_to_stdout()
        cli.quiet_libraries()
        quiet_mxnet()
        run(cli.to_object(dcfg))
    except KeyboardInterrupt as err:
        newline = "\n" if sys.stderr.isatty() else ""  # past a progress bar
        print(newline + interrupted_line(err, time.monotonic() - started), file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
