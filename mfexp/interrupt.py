"""Ctrl-C and SIGTERM that are never lost.

Python runs a signal handler at the next bytecode boundary of the main thread, wherever that is:
also inside a `__del__` (MXNet frees every NDArray in one, thousands of times per epoch) or a
weakref callback. A KeyboardInterrupt raised there is printed ("Exception ignored in ...") and
dropped, and training goes on as if nothing had been asked (CI saw a SIGTERM'd sweep train on
past 60 s, its last stderr line "KeyboardInterrupt: signal 15").

`install()` sets handlers that remember the signal as well as raising KeyboardInterrupt at once;
`check()`, called at safe points (each training batch), raises it again when the first one was
lost. Nothing here knows about MXNet, Optuna or MLflow.
"""
from __future__ import annotations

import signal
import threading
from typing import Optional

_pending: list[int] = []


def _handler(signum, frame) -> None:
    _pending.append(signum)
    raise KeyboardInterrupt(f"signal {signum}")


def install() -> None:
    """SIGINT and SIGTERM raise KeyboardInterrupt, and are remembered for `check()`. Only from the
    main thread (the only one Python lets set handlers); a SIGINT that is ignored (a job started
    with nohup, or in the background of a non-interactive shell) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)


def pending() -> Optional[int]:
    """The first signal received since `install()`, or None."""
    return _pending[0] if _pending else None


def check() -> None:
    """Raise KeyboardInterrupt if a signal came (its first KeyboardInterrupt may have been lost)."""
    if _pending:
        raise KeyboardInterrupt(f"signal {_pending[0]}")
