"""Side-feature files for data=file (`data.user_features`, `data.item_features`).

A header row, then one row per user (or item): the id first, then numeric columns, separated like
ratings files (tab, comma or '::'; see textfile.py). Each column is one feature named by its header,
its value taken as given; ids of the ratings file without a row get an all-zero row. Every problem
is a DataError `path:LINE: ...`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np

from mfexp.errors import DataError
from mfexp.data.features import Csr, SideFeatures
from mfexp.data.textfile import SEP_NAMES, decoded_lines, detect_separator, parse_id, split_fields

FORMAT = ("a header row (id, then one name per feature), then one row per id: the id, then a number per "
          "feature, separated by tabs, commas or '::'")


def _number(field: str) -> Optional[float]:
    try:
        value = float(field)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _header(path: Path, lineno: int, line: str, sep: Optional[str], key: str) -> list[str]:
    names = [f.strip() for f in split_fields(line, sep)]
    where = f"{path}:{lineno}: the first line must be a header, {FORMAT}"
    if len(names) < 2:
        raise DataError(f"{where}; found {len(names)} column in {line!r}. Fix {key}'s file.")
    if any(_number(n) is not None or not n for n in names):
        raise DataError(f"{where}; found {line!r}. Add a header row to {key}'s file.")
    dup = next((n for k, n in enumerate(names[1:], 1) if n in names[:k]), None)
    if dup is not None:
        raise DataError(f"{path}:{lineno}: column {dup!r} appears twice in the header. Give each column "
                        f"its own name.")
    return names[1:]


def read_feature_file(path_str: str, key: str, known_ids: np.ndarray, what: str) -> SideFeatures:
    """The features of `path_str` (config key `key`), one row per id of `known_ids` (sorted
    original ids, e.g. Dataset.user_ids); `what` names the ids in messages ('user', 'item')."""
    path = Path(path_str).expanduser()
    if not path.is_file():
        state = "is a directory" if path.is_dir() else "does not exist"
        raise DataError(f"{path}: {state}. Set {key} to a file of {FORMAT}, or to null.")
    known = np.asarray(known_ids, dtype=np.int64)
    names: Optional[list[str]] = None
    sep: Optional[str] = None
    seen: dict[int, int] = {}  # id -> line
    rows: list[int] = []
    cols: list[int] = []
    values: list[float] = []
    for lineno, line in decoded_lines(path):
        if not line.strip():
            continue
        if names is None:
            sep = detect_separator(line)
            names = _header(path, lineno, line, sep, key)
            header_line = lineno
            continue
        fields = split_fields(line, sep)
        if len(fields) != len(names) + 1:
            raise DataError(f"{path}:{lineno}: expected {len(names) + 1} fields separated by {SEP_NAMES[sep]} "
                            f"(as in the header on line {header_line}), found {len(fields)}: {line!r}.")
        uid = parse_id(fields[0])
        if uid is None:
            raise DataError(f"{path}:{lineno}: {what} id {fields[0].strip()!r} is not a non-negative integer.")
        if uid in seen:
            raise DataError(f"{path}:{lineno}: {what} id {uid} is also on line {seen[uid]}. Keep one row "
                            f"per {what}.")
        seen[uid] = lineno
        row = int(np.searchsorted(known, uid))
        if row >= len(known) or known[row] != uid:
            raise DataError(f"{path}:{lineno}: {what} id {uid} is not in the ratings file (data.path). "
                            f"Delete this row, or rate the {what}.")
        for col, (name, field) in enumerate(zip(names, fields[1:])):
            value = _number(field)
            if value is None:
                raise DataError(f"{path}:{lineno}: {name} {field.strip()!r} is not a finite number. Every "
                                f"column after the id must be numeric (one-hot encode categories).")
            if value != 0.0:
                rows.append(row)
                cols.append(col)
                values.append(value)
    if names is None:
        raise DataError(f"{path}: is empty. It must hold {FORMAT}.")
    return SideFeatures(tuple(names), Csr.from_coo(np.array(rows, np.int64), np.array(cols, np.int64),
                                                   np.array(values, np.float32), len(known), len(names)))
