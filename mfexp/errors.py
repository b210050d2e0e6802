"""User-facing errors: one clear paragraph, a non-zero exit, no traceback."""
from __future__ import annotations

import functools
import os
import re
import sys
from typing import Callable, TypeVar

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
    """Turn MfexpError into `mfexp: error: ...` on stderr and its exit code; a Hydra or OmegaConf
    error that escaped the CLI's own wording still gets one line and exit 2.

    HYDRA_FULL_ERROR=1 (or MFEXP_TRACEBACK=1) re-raises, for debugging.
    """

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except Exception as err:
            user_fault = isinstance(err, MfexpError) or type(err).__module__.startswith(("hydra.", "omegaconf."))
            if not user_fault or os.environ.get("HYDRA_FULL_ERROR") == "1" or os.environ.get("MFEXP_TRACEBACK") == "1":
                raise
            print(f"mfexp: error: {tidy(str(err) if isinstance(err, MfexpError) else clause(err, 1000) + '.')}",
                  file=sys.stderr)
            sys.exit(getattr(err, "exit_code", 2))

    return wrapper  # type: ignore[return-value]
