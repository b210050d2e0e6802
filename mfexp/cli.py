"""The command-line family: `mfexp.run`, `mfexp.sweep`, `mfexp.data` and `mfexp.recommend` read
the same `key=value` overrides (Hydra's grammar), answer `--help` and `--cfg job` the same way, and
exit 2 with one line naming the key for anything the user must fix (an unknown key, with or
without `+`; an unknown group option; a value of the wrong type). The only Hydra-aware module
besides the CLIs: it composes conf/ and turns the result into typed config."""
from __future__ import annotations

import difflib
import logging
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra import compose as hydra_compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from mfexp.config import Config, flatten
from mfexp.errors import ConfigError
from mfexp.models import to_settings, typed_node

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
CONFIG_FILES = "--config-dir DIR --config-name NAME"

EXIT_CODES = ("Exit codes: 0 done; 1 a run or sweep failed (a diverged loss, failing trials); "
              "2 something to fix in the command line, conf/ or the data; 130 interrupted.")


def register_schema(name: str = "mfexp_schema", node: Any = Config) -> None:
    schema = OmegaConf.structured(node)
    # the model node comes whole from conf/model/<name>.yaml: merged onto the dataclass's default
    # (plain's settings) it would keep keys such as `k` that another model's class does not have
    schema.model = {}
    ConfigStore.instance().store(name=name, node=schema)


def to_object(dcfg: DictConfig) -> Any:
    """The composed config as its dataclass (Config, or SweepAppConfig for sweeps), with the model
    node as its class's typed settings (unknown keys and wrong types refused, naming the key)."""
    obj = typed(dcfg)
    obj.model = to_settings(obj.model)
    return obj


def typed(node: DictConfig, prog: str = "python -m mfexp.run") -> Any:
    """OmegaConf.to_object, with a missing value (data.path: ???) or a bad one named as a ConfigError."""
    try:
        return OmegaConf.to_object(node)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        if err.__class__.__name__ == "MissingMandatoryValue" and key:
            raise ConfigError(f"{key} must be given (it has no default): add {key}=... to the command line.") from None
        raise ConfigError(explain(err, prog)) from None


# --- the command line ------------------------------------------------------------------------------
@dataclass
class CommandLine:
    overrides: list[str] = field(default_factory=list)
    help: bool = False
    cfg_job: bool = False
    config_dir: Optional[str] = None
    config_name: Optional[str] = None


def parse_command_line(argv: Optional[Sequence[str]], prog: str, config_files: bool = False) -> CommandLine:
    """Split argv into overrides and the family's options: -h/--help, --cfg job (-c job) and, where
    a command replays a saved config, --config-dir/-cd and --config-name/-cn."""
    args = list(sys.argv[1:] if argv is None else argv)
    out = CommandLine()
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, inline = arg.partition("=") if arg.startswith("-") else (arg, "", "")

        def value() -> str:
            nonlocal i
            if eq:
                return inline
            i += 1
            if i >= len(args):
                raise ConfigError(f"{name} needs a value ({prog} --help).")
            return args[i]

        if arg in ("-h", "--help"):
            out.help = True
        elif name in ("--cfg", "-c"):
            what = value()
            if what != "job":
                raise ConfigError(f"{name} {what}: only '--cfg job' is supported (it prints the composed config).")
            out.cfg_job = True
        elif config_files and name in ("--config-dir", "-cd"):
            out.config_dir = value()
        elif config_files and name in ("--config-name", "-cn"):
            out.config_name = value()
        elif arg.startswith("-"):
            raise ConfigError(f"{prog} does not take {arg!r}: give key=value overrides ({prog} --help "
                              "lists them).")
        else:
            out.overrides.append(arg)
        i += 1
    return out


def help_text(prog: str, doc: str, groups: Sequence[str] = (), config_files: bool = False) -> str:
    """The command's docstring, then what every command of the family shares."""
    lines = [doc.strip(), ""]
    if groups:
        lines.append("Config groups (GROUP=OPTION, from conf/):")
        for group in groups:
            lines.append(f"  {group}: {', '.join(group_options(group))}")
        lines.append("")
    lines += ["Overrides are key=value in Hydra's grammar (model=mlp train.lr=0.01).",
              "A key the schema lacks is refused, with or without '+'.",
              "Options:",
              "  -h, --help      this text",
              "  --cfg job       print the composed config and exit, training nothing"]
    if config_files:
        lines.append(f"  {CONFIG_FILES}   compose NAME.yaml from DIR (a sweep's best-<model>.yaml)")
    lines += ["", EXIT_CODES]
    return "\n".join(lines)


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


# --- composing conf/ -----------------------------------------------------------------------------------
def compose(config_name: str, overrides: Sequence[str], prog: str, schema: type = Config,
            config_dir: Optional[str] = None) -> DictConfig:
    """conf/<config_name>.yaml (or <config_dir>/<config_name>.yaml, with conf/ on the search path)
    with the overrides, checked against `schema`: every problem is a ConfigError naming the key."""
    overrides = list(overrides)
    root = CONF_DIR
    if config_dir:
        root = str(Path(config_dir).expanduser().resolve())
        if not Path(root, f"{config_name}.yaml").is_file():
            raise ConfigError(f"--config-dir {config_dir} --config-name {config_name}: "
                              f"{Path(root, config_name + '.yaml')} does not exist.")
        overrides.append(f"hydra.searchpath=[file://{CONF_DIR}]")
    try:
        with initialize_config_dir(config_dir=root, version_base="1.3"):
            dcfg = hydra_compose(config_name=config_name, overrides=overrides)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(explain(err, prog, schema)) from None
    check_known_keys(dcfg, prog, schema)
    return dcfg


def explain(err: BaseException, prog: str, schema: type = Config) -> str:
    """One line for a Hydra/OmegaConf composition error, naming the key or group to fix."""
    if isinstance(err, MissingConfigException) and err.missing_cfg_file and "/" in err.missing_cfg_file:
        group, _, option = err.missing_cfg_file.rpartition("/")
        options = list(err.options or group_options(group))
        close = difflib.get_close_matches(option, options, n=1)
        hint = f" (did you mean {group}={close[0]}?)" if close else ""
        return f"{group}={option}: conf/{group}/ has no {option}.yaml{hint}; the options: {', '.join(options)}."
    if isinstance(err, OverrideParseException):
        return (f"cannot parse an override ({parse_detail(err)}). Write key=value, "
                "and quote the whole override for the shell.")
    text = str(err).splitlines()[0].rstrip(".")
    cause: Optional[BaseException] = err
    while cause is not None and not isinstance(cause, OmegaConfBaseException):
        cause = cause.__cause__
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) or " not in '" in str(cause or ""):
        # "Could not override 'trian.lr'" names the whole key; the cause only its first unknown part
        key = _quoted(text) if text.startswith("Could not override") else getattr(cause, "full_key", None)
        return unknown_key(str(key or _quoted(str(cause))), prog, schema)
    if cause is not None and getattr(cause, "full_key", None):
        first = str(cause).splitlines()[0].rstrip(".")
        return f"{cause.full_key}: {first}. Fix the value on the command line or in conf/."
    if "No match in the defaults list" in str(err):
        group = _quoted(text)
        where = " (sweeps: python -m mfexp.sweep)" if group == "sweep" else ""
        return f"{prog} has no config group '{group}'{where}; {prog} --help lists its groups."
    return f"{text} (see {prog} --help)."


def parse_detail(err: BaseException) -> str:
    """What Hydra's override parser disliked, without its boilerplate lines."""
    lines = [ln.strip() for ln in str(err).splitlines()
             if ln.strip() and "hydra.cc" not in ln and not ln.startswith("Error parsing override")]
    return "; ".join(lines) or str(err).strip()


def _quoted(text: str) -> str:
    return text.split("'")[1] if text.count("'") >= 2 else text


def schema_keys(schema: type = Config) -> list[str]:
    return sorted(flatten(OmegaConf.to_container(OmegaConf.structured(schema))))


def empty_dicts(schema: type = Config) -> list[str]:
    """The schema's keys whose default is an empty dict (sweep.pruner_args, sweep.space, ...)."""
    def walk(node: Any, prefix: str) -> list[str]:
        if not isinstance(node, dict):
            return []
        if not node:
            return [prefix.rstrip(".")] if prefix else []
        return [k for key, value in node.items() for k in walk(value, f"{prefix}{key}.")]
    return walk(OmegaConf.to_container(OmegaConf.structured(schema)), "")


def unknown_key(key: str, prog: str, schema: type = Config) -> str:
    holder = next((d for d in empty_dicts(schema) if key == d or key.startswith(d + ".")), None)
    if holder is not None:  # the key is there (--cfg job lists it), but empty: Hydra's struct mode
        return (f"{key} cannot be set without '+': {holder} is a dict of free keys, and Hydra adds a new "
                f"key to it only with a '+' in front: write '+{key}=...' (quoted for the shell).")
    close = difflib.get_close_matches(key, schema_keys(schema), n=1, cutoff=0.7)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return (f"{key} is not a config key{hint}: fix its spelling; {prog} --cfg job prints every key "
            "and its value.")


def check_known_keys(dcfg: DictConfig, prog: str, schema: type = Config) -> None:
    """Refuse keys the schema lacks, however they came in (`+trian.lr=3` bypasses Hydra's struct
    check). The model node is checked by its own class's settings (mfexp.models.to_settings)."""
    plain = OmegaConf.to_container(dcfg, resolve=False)
    plain.pop("model", None)
    plain.pop("hydra", None)
    try:
        OmegaConf.merge(OmegaConf.structured(schema), plain)
    except (ConfigKeyError, ConfigAttributeError) as err:
        key = str(err.full_key or _quoted(str(err)))
        node = OmegaConf.select(OmegaConf.create(plain), key, default=None)
        if isinstance(node, DictConfig) and len(node) == 1:  # +trian.lr=3: name the key as written

            key = f"{key}.{next(iter(flatten(OmegaConf.to_container(node))))}"
        raise ConfigError(unknown_key(key, prog, schema)) from None
    except OmegaConfBaseException as err:
        raise ConfigError(explain(err, prog, schema)) from None


def print_config(dcfg: DictConfig) -> None:
    """--cfg job: the composed config as YAML, the model node with every setting of its class."""
    dcfg = dcfg.copy()
    if "model" in dcfg:
        dcfg.model = typed_node(dcfg.model)
    print(OmegaConf.to_yaml(dcfg, resolve=False), end="")


def apply_overrides(schema: type, overrides: Sequence[str], prog: str) -> tuple[DictConfig, set[str]]:
    """For commands without config groups (mfexp.recommend): `schema`'s defaults with the
    overrides, parsed by Hydra's own parser. Returns the config and the keys given."""
    cfg = OmegaConf.structured(schema)
    given: set[str] = set()
    for text in overrides:
        try:
            override = OverridesParser.create().parse_overrides([text])[0]
        except OverrideParseException as err:
            raise ConfigError(explain(err, prog, schema)) from None
        if override.is_sweep_override():
            raise ConfigError(f"{text}: {prog} takes one value per key, not a sweep expression.")
        key = override.key_or_group
        try:
            if override.is_delete():
                raise ConfigError(f"{text}: {prog} cannot delete keys; give key=value.")
            OmegaConf.update(cfg, key, override.value(), merge=True, force_add=False)
        except (ConfigKeyError, ConfigAttributeError):
            raise ConfigError(unknown_key(key, prog, schema)) from None
        except OmegaConfBaseException as err:
            raise ConfigError(f"{key}: {str(err).splitlines()[0].rstrip('.')}. Fix it on the command line.") from None
        given.add(key)
    return cfg, given


# --- console -------------------------------------------------------------------------------------------
def log_to_stdout() -> None:
    """Plain `message` lines on stdout, as Hydra's hydra/job_logging=stdout did for mfexp.run."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)


def one_line_warnings() -> None:
    """mfexp's own warnings (duplicate ratings, missing side features) as `mfexp: warning: ...`,
    without Python's file:line prefix and the source line that raised them."""
    package = str(Path(__file__).resolve().parent)
    default = warnings.formatwarning

    def formatwarning(message, category, filename, lineno, line=None):
        if str(filename).startswith(package):
            return f"mfexp: warning: {message}\n"
        return default(message, category, filename, lineno, line)

    warnings.formatwarning = formatwarning


def quiet_libraries() -> None:
    """Keep MLflow's and Alembic's start-up chatter out of the console."""
    one_line_warnings()
    for name in ("alembic", "mlflow", "git"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # urllib3 logs each retry to an unreachable tracking server as a WARNING before mfexp says
    # what is wrong in one line; the retries are ours to report, not its.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    logging.getLogger("mlflow.pyfunc").setLevel(logging.ERROR)
    logging.getLogger("mlflow.models").setLevel(logging.ERROR)
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # A tracking server that went away must not stall training for minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

    warnings.filterwarnings("ignore", message=".*Integer columns in Python cannot represent missing.*")
    warnings.filterwarnings("ignore", category=FutureWarning)
