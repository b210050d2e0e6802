"""ML-100K side features from GroupLens' `u.user` and `u.item` ('|' separated, u.item latin-1).

Users: age bucket, gender, occupation and zip prefix, one-hot each. Items: genres (multi-hot, each
1/sqrt(the item's number of genres)) and a release-year bucket, one-hot. Names read `age=25-34`,
`gender=F`, `occupation=writer`, `zip=9`, `genre=Comedy`, `year=1990-1992`. Rows follow the table;
`SideFeatures.for_ids` aligns them with a Dataset (the loader does). A malformed line raises DataError `name:LINE: ...`.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from mfexp.errors import DataError
from mfexp.data.features import Csr, SideFeatures

# u.genre's order: the 19 0/1 columns at the end of each u.item line.
GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
          "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
          "War", "Western")
UUSER_FIELDS = 5  # id|age|gender|occupation|zip
UITEM_FIELDS = 5 + len(GENRES)  # id|title|release date|video release date|IMDb URL|19 genre flags
# ML-1M's age groups; (upper bound exclusive, label).
AGE_BUCKETS = ((18, "<18"), (25, "18-24"), (35, "25-34"), (45, "35-44"), (50, "45-49"), (56, "50-55"),
               (None, "56+"))
# Release years: decades before 1990, where few films are; two or three years each after it,
# where most of ML-100K's films are (1993-1997 hold over 70% of them).
RECENT_YEARS = ((1990, 1992), (1993, 1994), (1995, 1996))


def age_bucket(age: int) -> str:
    return next(label for bound, label in AGE_BUCKETS if bound is None or age < bound)


def zip_prefix(zip_code: str) -> str:
    """First digit of a US zip code; Canadian and other codes share `other`."""
    z = zip_code.strip()
    return z[0] if z[:1].isdigit() else "other"


def year_bucket(release_date: str) -> str:
    """'01-Jan-1995' -> '1995-1996'; an empty or unparsable date -> 'unknown'."""
    year = release_date.strip()[-4:]
    if not year.isdigit():
        return "unknown"
    y = int(year)
    if y < RECENT_YEARS[0][0]:
        return f"{y // 10 * 10}s"
    for lo, hi in RECENT_YEARS:
        if y <= hi:
            return f"{lo}-{hi}"
    return f"{RECENT_YEARS[-1][1] + 1}+"


def _year_key(label: str) -> tuple[int, str]:
    return (10**6, label) if label == "unknown" else (int(label[:4]), label)


def _age_key(label: str) -> tuple[int, str]:
    return ([lab for _, lab in AGE_BUCKETS].index(label), label)


def _lines(data: bytes, name: str, n_fields: int, encoding: str) -> list[tuple[int, list[str]]]:
    """(line number, fields) of each non-blank line, each with n_fields '|'-separated fields."""
    out = []
    for lineno, line in enumerate(data.decode(encoding, errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) != n_fields:
            raise DataError(f"{name}:{lineno}: expected {n_fields} fields separated by '|', found "
                            f"{len(fields)}. Restore GroupLens' original file.")
        if not fields[0].strip().isdigit():
            raise DataError(f"{name}:{lineno}: id {fields[0]!r} is not a number. Restore GroupLens' "
                            f"original file.")
        out.append((lineno, fields))
    return out


class _Builder:
    """Collects (row, column name, value) entries, then orders each block's columns."""

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.labels: list[tuple[str, str]] = []  # (block, label)
        self.values: list[float] = []

    def add(self, row: int, block: str, label: str, value: float = 1.0) -> None:
        self.rows.append(row)
        self.labels.append((block, label))
        self.values.append(value)

    def build(self, n_rows: int, blocks: Sequence[tuple[str, Callable[[str], object]]]) -> SideFeatures:
        names: list[str] = []
        for block, key in blocks:  # only the labels present, in the block's order
            present = {label for b, label in self.labels if b == block}
            names += [f"{block}={label}" for label in sorted(present, key=key)]  # type: ignore[arg-type]
        col = {name: k for k, name in enumerate(names)}
        cols = np.array([col[f"{b}={label}"] for b, label in self.labels], dtype=np.int64)
        matrix = Csr.from_coo(np.array(self.rows, dtype=np.int64), cols,
                              np.array(self.values, dtype=np.float32), n_rows, len(names))
        return SideFeatures(tuple(names), matrix)


def _check_unique(ids: list[int], name: str, lines: list[int]) -> np.ndarray:
    seen: dict[int, int] = {}
    for key, lineno in zip(ids, lines):
        if key in seen:
            raise DataError(f"{name}:{lineno}: id {key} is also on line {seen[key]}. Restore GroupLens' "
                            f"original file.")
        seen[key] = lineno
    return np.array(ids, dtype=np.int64)


def user_features(data: bytes, name: str = "u.user") -> tuple[np.ndarray, SideFeatures]:
    """(original user ids, their side features) from u.user bytes."""
    b = _Builder()
    ids, linenos = [], []
    for row, (lineno, (uid, age, gender, occupation, zip_code)) in enumerate(_lines(data, name, UUSER_FIELDS,
                                                                                    "latin-1")):
        if not age.strip().isdigit():
            raise DataError(f"{name}:{lineno}: age {age!r} is not a number. Restore GroupLens' original file.")
        ids.append(int(uid))
        linenos.append(lineno)
        b.add(row, "age", age_bucket(int(age)))
        b.add(row, "gender", gender.strip())
        b.add(row, "occupation", occupation.strip())
        b.add(row, "zip", zip_prefix(zip_code))
    other_last = lambda s: (s == "other", s)  # noqa: E731
    blocks = (("age", _age_key), ("gender", str), ("occupation", str), ("zip", other_last))
    return _check_unique(ids, name, linenos), b.build(len(ids), blocks)


def item_features(data: bytes, name: str = "u.item") -> tuple[np.ndarray, SideFeatures]:
    """(original item ids, their side features) from u.item bytes (latin-1)."""
    b = _Builder()
    ids, linenos = [], []
    for row, (lineno, fields) in enumerate(_lines(data, name, UITEM_FIELDS, "latin-1")):
        flags = [f.strip() for f in fields[5:]]
        if any(f not in ("0", "1") for f in flags):
            raise DataError(f"{name}:{lineno}: the last {len(GENRES)} fields must be genre flags 0 or 1, got "
                            f"{'|'.join(flags)!r}. Restore GroupLens' original file.")
        genres = [g for g, f in zip(GENRES, flags) if f == "1"]
        ids.append(int(fields[0]))
        linenos.append(lineno)
        for genre in genres:
            b.add(row, "genre", genre, 1.0 / np.sqrt(len(genres)))
        b.add(row, "year", year_bucket(fields[2]))
    blocks = (("genre", GENRES.index), ("year", _year_key))
    return _check_unique(ids, name, linenos), b.build(len(ids), blocks)
