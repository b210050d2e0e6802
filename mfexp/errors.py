"""User-facing errors: one clear paragraph, a non-zero exit, no traceback."""
from __future__ import annotations

import errno
import functools
import os
import re
import sys
from typing import Callable, Optional, TypeVar

F = TypeVar("F", bound=Callable)


class MfexpError(Exception):
    """An error the user can fix; its message says what to fix. Exit code 2."""

    exit_code = 2


class ConfigError(MfexpError):
    """A configuration value is invalid; the message names the config key."""


class DataError(MfexpError):
    """Input data is missing or malformed; the message names the file (and line)."""


class TrainingDiverged(MfexpError):
    """The loss became non-finite."""

    exit_code = 1


class DiskFull(MfexpError):
    """A write failed for lack of space (ENOSPC, or EDQUOT: over quota); the message names the path.
    What was written before is intact: free space and run the same command again."""

    exit_code = 1


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def disk_full(err: OSError, path: Optional[object] = None) -> Optional[DiskFull]:
    """A DiskFull naming `path` (else the error's own file name) when `err` is ENOSPC/EDQUOT, else None."""
    if err.errno not in NO_SPACE:
        return None
    where = path or err.filename or "a file (the system did not say which)"
    kind = "disk full (ENOSPC)" if err.errno == errno.ENOSPC else "disk quota exceeded (EDQUOT)"
    return DiskFull(f"{kind} while writing {where}. Nothing already written was lost. Free space on that "
                    "file system, then run the same command again: it resumes (a trial cut short is "
                    "marked FAIL and made up).")


def full_disk_behind(err: BaseException) -> Optional[MfexpError]:
    """The full disk behind an error, if one is in its chain: a failed write often breaks what runs
    next (Optuna 5 turns a storage write that fails while it ends a trial into "AssertionError:
    Should not reach."), and the disk, not that, is what the user must fix."""
    seen: set[int] = set()
    cause: Optional[BaseException] = err
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, DiskFull):
            return cause
        if isinstance(cause, OSError) and disk_full(cause) is not None:
            return disk_full(cause)
        cause = cause.__cause__ or cause.__context__
    return None


def clause(text: object, limit: int = 300) -> str:
    """Another library's message as a clause inside ours: its first non-empty line, without a
    trailing full stop (ours follows), shortened at a word boundary rather than mid-word."""
    line = next((ln.strip() for ln in str(text).splitlines() if ln.strip()), "").rstrip(" .")
    return line if len(line) <= limit else line[:limit].rsplit(" ", 1)[0].rstrip(" .,;:") + "…"


def tidy(message: str) -> str:
    """One line of prose: no doubled full stops, no space before a full stop."""
    message = re.sub(r"\s+\.(?=\s|$)", ".", message.strip()).replace("….", "…")
    return re.sub(r"(?<!\.)\.\.(?=\s|$)", ".", message)


def friendly_errors(main: F) -> F:
    """Turn MfexpError (and a full disk, wherever it is met) into `mfexp: error: ...` on stderr
    and its exit code; a Hydra or OmegaConf error that escaped the CLI's own wording still gets
    one line and exit 2.

    HYDRA_FULL_ERROR=1 (or MFEXP_TRACEBACK=1) re-raises, for debugging.
    """

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except Exception as caught:  # noqa: BLE001 - anything else is re-raised as it was
            err = caught if isinstance(caught, MfexpError) else full_disk_behind(caught)
            if err is None and type(caught).__module__.startswith(("hydra.", "omegaconf.")):
                err = caught
            if err is None or os.environ.get("HYDRA_FULL_ERROR") == "1" or os.environ.get("MFEXP_TRACEBACK") == "1":
                raise
            print(f"mfexp: error: {tidy(str(err) if isinstance(err, MfexpError) else clause(err, 1000) + '.')}",
                  file=sys.stderr)
            sys.exit(getattr(err, "exit_code", 2))

    return wrapper  # type: ignore[return-value]
