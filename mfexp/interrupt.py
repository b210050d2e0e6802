"""Ctrl-C and SIGTERM that are never lost.

Python runs a signal handler at the next bytecode boundary of the main thread, wherever that is:
also inside a `__del__` (MXNet frees every NDArray in one, thousands of times per epoch) or a
weakref callback. A KeyboardInterrupt raised there is printed ("Exception ignored in ...") and
dropped, and training goes on as if nothing had been asked (CI saw a SIGTERM'd sweep train on
past 60 s, its last stderr line "KeyboardInterrupt: signal 15").

`install()` sets handlers that remember the signal as well as raising KeyboardInterrupt at once;
`check()`, called at safe points (each training batch), raises it again when the first one was
lost. `deferred()` holds the KeyboardInterrupt back until a block ends: a store call torn in the
middle of a database transaction leaves its connection holding the lock, and the next call of the
same process (marking the trial FAIL, its run KILLED) waits on it for ever (CI saw a SIGTERM'd
sweep hang so, in MLflow's SQLite store). Nothing here knows about MXNet, Optuna or MLflow.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator, Optional

_pending: list[int] = []
_deferred: list[int] = []  # per open deferred() block of the main thread: len(_pending) when it opened


def _handler(signum, frame) -> None:
    _pending.append(signum)
    if _deferred and len(_pending) == _deferred[-1] + 1:
        return  # the first signal inside a deferred() block: raised when the block ends
    raise KeyboardInterrupt(f"signal {signum}")  # a second one raises at once: a way out of a hung call


@contextmanager
def deferred() -> Iterator[None]:
    """Run the block whole: a SIGINT/SIGTERM that comes during it raises KeyboardInterrupt when it
    ends (a second signal during it raises at once). Outside the main thread, where no handler
    runs, it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _deferred.append(len(_pending))
    try:
        yield
    finally:
        opened = _deferred.pop()
    if len(_pending) > opened:
        raise KeyboardInterrupt(f"signal {_pending[opened]}")


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
