"""Read any ratings file: `user SEP item SEP rating [SEP timestamp]`, one rating a line.

SEP is detected from the first non-blank line: `::` (ML-1M/10M), tab, comma, else whitespace.
An optional header (first line whose id fields are not numeric, e.g. ML-20M's
`userId,movieId,rating,timestamp`) is skipped. CRLF line endings are accepted.
Fast path: pandas' C parser. When it fails or its result breaks a rule, a slow line-by-line
pass finds the first bad line and reports it as `path:LINE: ...` in a DataError.
"""
from __future__ import annotations

import io
import math
import re
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np
import pandas as pd

from mfexp.errors import DataError

_ID = re.compile(r"^\s*\+?\d+\s*$")
_INT = re.compile(r"^\s*[+-]?\d+\s*$")
SEP_NAMES = {"::": "'::'", "\t": "tabs", ",": "commas", None: "whitespace"}
_FORMAT = "user, item, rating[, timestamp] separated by tabs, commas or '::'"
_INT64_MAX = np.iinfo(np.int64).max


class RawRatings(NamedTuple):
    users: np.ndarray  # int64 original ids
    items: np.ndarray  # int64 original ids
    ratings: np.ndarray  # float64
    timestamps: np.ndarray  # int64, zeros when the file has none


class _Layout(NamedTuple):
    sep: Optional[str]  # None: runs of whitespace
    header_line: int  # 1-based line number of the header, 0 if none
    ncols: int  # 3 or 4
    first_data_line: int  # 1-based


def _is_number(field: str) -> bool:
    try:
        float(field)
        return True
    except ValueError:
        return False


def parse_id(field: str) -> Optional[int]:
    """A user or item id: a non-negative integer that fits int64; None when the field is not one."""
    if not _ID.match(field) or int(field) > _INT64_MAX:
        return None
    return int(field)


def detect_separator(line: str) -> Optional[str]:
    """The separator a file uses, from its first non-blank line: '::', tab, comma, else None (whitespace)."""
    return "::" if "::" in line else "\t" if "\t" in line else "," if "," in line else None


def split_fields(line: str, sep: Optional[str]) -> list[str]:
    return line.split() if sep is None else line.split(sep)


def decoded_lines(path: Path):
    """(line number, text) of every line: UTF-8 (bad bytes replaced), BOM and CR/LF stripped."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            yield lineno, raw.decode("utf-8", errors="replace").rstrip("\r\n").lstrip("\ufeff")


def _bad(path: Path, lineno: int, what: str, line: str) -> DataError:
    shown = line if len(line) <= 120 else line[:117] + "..."
    return DataError(f"{path}:{lineno}: {what}: {shown!r}. Each line must hold {_FORMAT}; "
                     f"fix or delete this line and rerun.")


def _open_check(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path} does not exist. Set data.path to a ratings file ({_FORMAT}).")
    if path.is_dir():
        raise DataError(f"{path} is a directory, not a ratings file. Set data.path to a file ({_FORMAT}).")
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as err:
        raise DataError(f"{path} cannot be read ({err.strerror or err}). "
                        f"Check that it is a readable file and its permissions.") from err


def _sniff(path: Path) -> _Layout:
    """Separator, header and column count, from the first non-blank lines."""
    sep: Optional[str] = None
    header = 0
    first = True
    for lineno, line in decoded_lines(path):
        if not line.strip():
            continue
        if first:  # the first non-blank line decides the separator and the header
            first = False
            sep = detect_separator(line)
            fields = split_fields(line, sep)
            if len(fields) >= 2 and not _is_number(fields[0]) and not _is_number(fields[1]):
                header = lineno  # e.g. userId,movieId,rating,timestamp
                continue
        fields = split_fields(line, sep)
        if len(fields) not in (3, 4):
            raise _bad(path, lineno, f"expected 3 or 4 fields separated by {SEP_NAMES[sep]}, "
                                     f"found {len(fields)}", line)
        return _Layout(sep, header, len(fields), lineno)
    if header:
        raise DataError(f"{path} has a header line but no ratings. Add lines of {_FORMAT}.")
    raise DataError(f"{path} is empty: it holds no ratings. Add lines of {_FORMAT}.")


def _fast(path: Path, lay: _Layout) -> Optional[RawRatings]:
    """pandas C parser; None when the result needs the slow pass (an error or a broken rule)."""
    src: object = path
    sep = lay.sep
    if sep == "::":  # single-char separators keep pandas on its C engine
        src, sep = io.BytesIO(path.read_bytes().replace(b"::", b"\t")), "\t"
    try:
        df = pd.read_csv(src, sep=r"\s+" if sep is None else sep, header=None,
                         skiprows=lay.header_line, engine="c", skip_blank_lines=True)
    except (ValueError, UnicodeDecodeError, OverflowError, pd.errors.ParserError, MemoryError):
        return None
    if df.shape[1] != lay.ncols:
        return None
    cols = [df[c].to_numpy() for c in df.columns]
    if any(c.dtype.kind not in "iu" for c in cols[:2]) or cols[2].dtype.kind not in "iuf":
        return None
    if lay.ncols == 4 and cols[3].dtype.kind not in "iu":
        return None
    if any(c.dtype.kind == "u" and len(c) and c.max() > _INT64_MAX for c in cols[:2] + cols[3:]):
        return None
    users, items = cols[0].astype(np.int64), cols[1].astype(np.int64)
    ratings = cols[2].astype(np.float64)
    if len(users) == 0 or users.min() < 0 or items.min() < 0 or not np.isfinite(ratings).all():
        return None
    ts = cols[3].astype(np.int64) if lay.ncols == 4 else np.zeros(len(users), np.int64)
    return RawRatings(users, items, ratings, ts)


def _slow(path: Path, lay: _Layout) -> RawRatings:
    """Line by line: raise on the first bad line, with its number; else return the arrays."""
    u: list[int] = []
    i: list[int] = []
    r: list[float] = []
    t: list[int] = []
    for lineno, line in decoded_lines(path):
        if lineno == lay.header_line or not line.strip():
            continue
        fields = split_fields(line, lay.sep)
        if len(fields) != lay.ncols:
            raise _bad(path, lineno, f"expected {lay.ncols} fields separated by {SEP_NAMES[lay.sep]} "
                                     f"(as on line {lay.first_data_line}), found {len(fields)}", line)
        for name, field in (("user id", fields[0]), ("item id", fields[1])):
            if parse_id(field) is None:
                raise _bad(path, lineno, f"{name} {field.strip()!r} is not a non-negative integer", line)
        try:
            rating = float(fields[2])
        except ValueError:
            raise _bad(path, lineno, f"rating {fields[2].strip()!r} is not a number", line) from None
        if not math.isfinite(rating):
            raise _bad(path, lineno, f"rating {fields[2].strip()!r} is not a finite number", line)
        if lay.ncols == 4:
            if not _INT.match(fields[3]) or abs(int(fields[3])) > _INT64_MAX:
                raise _bad(path, lineno, f"timestamp {fields[3].strip()!r} is not an integer", line)
            t.append(int(fields[3]))
        u.append(int(fields[0]))
        i.append(int(fields[1]))
        r.append(rating)
    ts = np.array(t, np.int64) if lay.ncols == 4 else np.zeros(len(u), np.int64)
    return RawRatings(np.array(u, np.int64), np.array(i, np.int64), np.array(r, np.float64), ts)


def read_ratings_file(path: str | Path) -> RawRatings:
    """Parse a ratings file into original-id arrays (duplicates kept; see loader)."""
    path = Path(path).expanduser()
    _open_check(path)
    lay = _sniff(path)
    raw = _fast(path, lay)
    if raw is None:
        raw = _slow(path, lay)  # raises with path:LINE when a line is bad
    if len(raw.users) == 0:
        raise DataError(f"{path} holds no ratings. Add lines of {_FORMAT}.")
    return raw
