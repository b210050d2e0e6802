"""User-facing errors: one clear paragraph, a non-zero exit, no traceback."""
from __future__ import annotations

import functools
import os
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


def friendly_errors(main: F) -> F:
    """Turn MfexpError into `mfexp: error: ...` on stderr and its exit code.

    HYDRA_FULL_ERROR=1 (or MFEXP_TRACEBACK=1) re-raises, for debugging.
    """

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except MfexpError as err:
            if os.environ.get("HYDRA_FULL_ERROR") == "1" or os.environ.get("MFEXP_TRACEBACK") == "1":
                raise
            print(f"mfexp: error: {err}", file=sys.stderr)
            sys.exit(err.exit_code)

    return wrapper  # type: ignore[return-value]
