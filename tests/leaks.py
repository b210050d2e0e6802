"""Where a secret ended up: every place a run or a sweep writes to, searched for one string.

`places_holding(secret, ...)` returns a line per place that holds it (empty: nowhere), looking at
- every row of every table of the MLflow store (SQLite or PostgreSQL, read with SQL, also behind a
  tracking server: params, tags, descriptions, datasets, logged models, whatever MLflow keeps);
- each run's params, tags and description as MlflowClient returns them (what the UI shows);
- the bytes of every file under `root` (the command's working folder: sweeps/ with report.md and
  best-<model>.yaml, the artifacts under mlruns/, a SQLite store's file, free pages included);
- every key and value of a Redis server the command used as Optuna's storage;
- the command's captured stdout and stderr.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional


def places_holding(secret: str, *, root: Path, tracking_uri: str, outputs: dict[str, str],
                   redis_url: Optional[str] = None, store_uri: Optional[str] = None) -> list[str]:
    """`store_uri`: the database behind a tracking server (default: `tracking_uri` is one)."""
    assert len(secret) >= 8, "a secret short enough to occur by chance proves nothing"
    found = [f"the command's {name}" for name, text in outputs.items() if secret in text]
    found += _in_store_rows(secret, store_uri or tracking_uri)
    found += _in_runs(secret, tracking_uri)
    needle = secret.encode()
    found += [f"file {p.relative_to(root)}" for p in sorted(root.rglob("*")) if p.is_file() and needle in p.read_bytes()]
    if redis_url:
        found += _in_redis(needle, redis_url)
    return found


def _in_store_rows(secret: str, uri: str) -> list[str]:
    import sqlalchemy

    engine = sqlalchemy.create_engine(uri)
    found = []
    try:
        with engine.connect() as conn:
            tables = sqlalchemy.inspect(conn).get_table_names()
            assert "runs" in tables and "params" in tables, f"not an MLflow store: {tables}"
            for table in tables:
                for row in conn.execute(sqlalchemy.text(f'SELECT * FROM "{table}"')):
                    if any(secret in _text(v) for v in row):
                        found.append(f"store table {table}: {tuple(_text(v)[:120] for v in row)}")
    finally:
        engine.dispose()
    return found


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, (bytes, memoryview)) else str(value)


def _in_runs(secret: str, uri: str) -> list[str]:
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    found = []
    experiments = client.search_experiments(view_type=ViewType.ALL)
    assert experiments, "the command recorded nothing: no experiment to search"
    for exp in experiments:
        runs = client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, max_results=1000)
        for run in runs:
            for kind, items in (("param", run.data.params), ("tag", run.data.tags)):
                found += [f"run {run.info.run_name} {kind} {k}" for k, v in items.items() if secret in v]
    return found


def _in_redis(needle: bytes, url: str) -> list[str]:
    import redis

    r = redis.Redis.from_url(url)
    found = []
    for key in r.scan_iter():
        kind = r.type(key).decode()
        values = {"string": lambda: [r.get(key)], "list": lambda: r.lrange(key, 0, -1),
                  "hash": lambda: [*r.hgetall(key).keys(), *r.hgetall(key).values()],
                  "set": lambda: list(r.smembers(key)),
                  "zset": lambda: r.zrange(key, 0, -1)}.get(kind, lambda: [])()
        if needle in key or any(needle in (v or b"") for v in values):
            found.append(f"redis key {key!r}")
    return found
