"""Ctrl-C and SIGTERM that are never lost.

Python runs a signal handler at the next bytecode boundary of the main thread, wherever that is:
also inside a `__del__` (MXNet frees every NDArray in one, thousands of times per epoch) or a
weakref callback. A KeyboardInterrupt raised there is printed ("Exception ignored in ...") and
dropped, and training goes on as if nothing had been asked (CI saw a SIGTERM'd sweep train on
past 60 s, its last stderr line "KeyboardInterrupt: signal 15").

`install()` sets handlers that remember the signal as well as raising KeyboardInterrupt at once;
`check()`, called at safe points (each training batch), raises it again when the first one was
lost, and the lost one is not printed (its "Exception ignored in ... KeyboardInterrupt" traceback
would break the one line an interrupted command ends with). `deferred()` makes a block run whole,
its signals delivered when it ends: a journal append or a database store call torn between taking
a lock and freeing it leaves the lock held, and the process's next write (marking the trial FAIL,
its run KILLED) waits on it (CI saw SIGTERM'd sweeps hang on both). Nothing here knows about
MXNet, Optuna or MLflow.
"""
from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator, Optional

_pending: list[int] = []
_unraisable_before = None  # the sys.unraisablehook install() found


def _handler(signum, frame) -> None:
    _pending.append(signum)
    raise KeyboardInterrupt(f"signal {signum}")


def _unraisable(info) -> None:
    """sys.unraisablehook: once a signal came, two echoes of it are dropped quietly: its
    KeyboardInterrupt raised inside a __del__ (check() raises it again), and the AttributeError of
    an object whose constructor it cut short, freed half-built (CI: MXNet's NDArray.__del__ on an
    NDArray without its `handle`). Anything else is reported as before."""
    if _pending and isinstance(info.exc_value, (KeyboardInterrupt, AttributeError)):
        return
    (_unraisable_before or sys.__unraisablehook__)(info)


def install() -> None:
    """SIGINT and SIGTERM raise KeyboardInterrupt, and are remembered for `check()`. Only from the
    main thread (the only one Python lets set handlers). Also when SIGINT was ignored: a command
    started in the background of a script (or by any process that ignores SIGINT) inherits SIG_IGN,
    and `kill -INT` would then be lost while it trains to the end."""
    global _unraisable_before
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)
    if sys.unraisablehook is not _unraisable:
        _unraisable_before, sys.unraisablehook = sys.unraisablehook, _unraisable


def pending() -> Optional[int]:
    """The first signal received since `install()`, or None."""
    return _pending[0] if _pending else None


def check() -> None:
    """Raise KeyboardInterrupt if a signal came (its first KeyboardInterrupt may have been lost)."""
    if _pending:
        raise KeyboardInterrupt(f"signal {_pending[0]}")


@contextmanager
def deferred(second_at_once: bool = False) -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block ends (then they are delivered as usual, to whatever
    handlers were set). With `second_at_once`, a second signal during the block is delivered at
    once: a way out of a call that hangs. Outside the main thread, where no handler runs, it does
    nothing.

    The Python-level handlers are swapped for a recorder for the block's length. Blocking the
    signals in the main thread (pthread_sigmask) is not enough: the kernel then hands them to
    another thread (MXNet's, MLflow's), and Python still runs the handler in the main thread at
    once, which could raise between taking a lock and the `try` that frees it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    swapped = {s: h for s, h in old.items() if h is not None}  # None: a handler not set from Python

    def restore() -> None:
        for s, h in swapped.items():
            signal.signal(s, h)

    def record(signum, frame) -> None:
        received.append(signum)
        if second_at_once and len(received) > 1:
            restore()
            received.clear()  # delivered now, not again when the block ends
            signal.raise_signal(signum)

    for s in swapped:
        signal.signal(s, record)
    try:
        yield
    finally:
        restore()
        if received:
            signal.raise_signal(received[0])  # delivered as usual, now that the block is over
