"""`python -m mfexp.track links [BASE]`: a link to each mfexp experiment's runs in the MLflow UI,
with the filter that opens it on the model-training side (make ui prints them)."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional

from mfexp.track.tracker import DEFAULT_UI, tracking_uri, ui_links


def main(argv: Optional[list[str]] = None) -> int:
    """`python -m mfexp.track links [BASE]`: the direct links `make ui` prints."""
    parser = argparse.ArgumentParser(prog="python -m mfexp.track")
    parser.add_argument("command", choices=["links"])
    parser.add_argument("base", nargs="?", default=DEFAULT_UI, help="the UI's address (default %(default)s)")
    args = parser.parse_args(argv)
    for name in ("mlflow", "alembic"):  # creating a fresh store's tables is not news
        logging.getLogger(name).setLevel(logging.WARNING)
    base = args.base.replace("://0.0.0.0", "://127.0.0.1")  # bound to all interfaces: open it locally
    lines = ui_links(base)
    print(f"MLflow UI: {base}  (store: {tracking_uri()})")
    print("\n".join(["the runs of each experiment:", *lines]) if lines
          else "no mfexp experiment yet: make sweep or make run records one")
    return 0


if __name__ == "__main__":
    sys.exit(main())
