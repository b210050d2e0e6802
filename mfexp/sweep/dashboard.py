"""`python -m mfexp.sweep.dashboard`: optuna-dashboard over a sweep's Optuna storage (`make dashboard`).

    python -m mfexp.sweep.dashboard                          # sweeps/default/optuna.journal
    python -m mfexp.sweep.dashboard --sweep smoke --port 8081
    python -m mfexp.sweep.dashboard --storage postgresql://user@host/optuna

The journal file is read by optuna-dashboard's own loader (JournalStorage(JournalFileBackend),
as Optuna 5 writes it); an RDB URL is opened without creating or migrating tables. Binds to
127.0.0.1 unless --host says otherwise.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import optuna_dashboard

from mfexp.errors import ConfigError, friendly_errors
from mfexp.track.tracker import redact


def storage_of(sweep: str, root: str = "sweeps", storage: Optional[str] = None) -> str:
    """The storage to show: `storage` (an RDB URL or a journal file) or the sweep's journal file."""
    if storage:
        return storage
    journal = Path(root) / sweep / "optuna.journal"
    if not journal.is_file():
        raise ConfigError(f"no Optuna storage for sweep {sweep!r}: {journal} does not exist. Run the sweep first "
                          "(make sweep), name another one (make dashboard SWEEP=<name>), or give its RDB URL "
                          "(make dashboard STORAGE=sqlite:///sweep.db).")
    return str(journal)


@friendly_errors
def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mfexp.sweep.dashboard", description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", default="default", help="the sweep's name (sweep.name; default %(default)s)")
    parser.add_argument("--root", default="sweeps", help="the sweeps' folder (sweep.root; default %(default)s)")
    parser.add_argument("--storage", default=None, help="an Optuna RDB URL (sweep.storage) instead of the journal")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    storage = storage_of(args.sweep, args.root, args.storage)

    shown = "127.0.0.1" if args.host == "0.0.0.0" else args.host
    print(f"optuna-dashboard: http://{shown}:{args.port}/dashboard  (storage: {redact(storage)}; Ctrl-C stops it)",
          flush=True)
    try:
        optuna_dashboard.run_server(storage, host=args.host, port=args.port)
    except ValueError as err:  # optuna-dashboard could not tell what kind of storage it is
        raise ConfigError(f"optuna-dashboard cannot open {redact(storage)}: {err}. Give an Optuna RDB URL "
                          "(sqlite:///..., postgresql://...) or a journal file.") from err
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
