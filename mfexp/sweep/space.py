"""Search spaces written in Hydra's own override grammar, mapped to Optuna distributions.

A sweep's space maps dotted config keys to expressions, parsed by Hydra's
``OverridesParser`` (no parser of our own)::

    model.k: choice(16,32,64,128,256)          # CategoricalDistribution, values keep their types
    model.dropout: interval(0.0,0.7)           # FloatDistribution(0.0, 0.7)
    model.hidden: interval(16,256)             # both ends ints -> IntDistribution(16, 256), 256 included
    train.lr: tag(log, interval(1e-4,1e-1))    # FloatDistribution(..., log=True)
    train.epochs: range(5,30,5)                # IntDistribution(5, 25, step=5): 5,10,15,20,25
    train.optimizer: choice(sgd,adam)
    train.momentum: 0.9                        # a plain value: fixed, not searched

The mapping follows the retired hydra-optuna-sweeper plugin
(``create_optuna_distribution_from_override``), updated for Optuna's
``FloatDistribution``/``IntDistribution``/``CategoricalDistribution``, with these rules:

* ``range(start, stop[, step])`` EXCLUDES ``stop``, like Python's ``range`` (and like Hydra's
  basic sweeper): ``range(5,30,5)`` is 5,10,15,20,25 and never 30. (The old plugin passed
  ``stop`` as Optuna's inclusive ``high``, which added ``stop``; we do not.) ``range(5)`` is
  0..4; a negative step counts down. Int ranges become ``IntDistribution(low, high=last
  value, step)``. Float ranges count in decimal, as written -- ``range(0,1,0.1)`` is
  0.0, 0.1, ..., 0.9 (0.7, not Hydra's 0.7000000000000001) -- and become a stepped
  ``FloatDistribution`` when Optuna's ``low + i*step`` reproduces every value exactly
  (e.g. steps of 0.25), else a ``CategoricalDistribution`` of the values.
* ``interval(low, high)`` is a ``FloatDistribution(low, high)``; when both ends are written
  as ints it is an ``IntDistribution(low, high)`` with ``high`` included (Hydra itself casts
  interval ends to float; our parser registers a type-preserving ``interval`` in Hydra's
  function table so the int case is visible).
* ``tag(log, ...)`` sets ``log=True`` on an interval, or on an int range with step 1; it needs
  ``low > 0``. Other tags are rejected.
* ``shuffle(...)``/``sort(...)`` are accepted and make no difference (a distribution has no
  order). ``glob(...)``, lists (``[1,2]``), dicts and nested mappings are rejected.
* ``a,b,c`` (Hydra's short form of ``choice(a,b,c)``) is a choice.
* A plain value -- int, float, string, bool or null, in YAML or as a string -- is fixed.
"""
import functools
import math
import numbers
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from typing import Any, Mapping, Sequence, Union

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser, create_functions
from hydra.core.override_parser.types import (
    ChoiceSweep,
    Glob,
    IntervalSweep,
    Override,
    OverrideType,
    Quote,
    QuotedString,
    RangeSweep,
    ValueType,
)
from hydra.errors import HydraException, OverrideParseException
from omegaconf import DictConfig, ListConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from mfexp.errors import ConfigError

__all__ = ["GRAMMAR_HINT", "SearchSpace", "merge_space_overrides", "parse_space"]

GRAMMAR_HINT = (
    "Write one of: choice(a,b,...), range(start,stop[,step]) (stop excluded), "
    "interval(low,high), tag(log, interval(low,high)), or a plain value (fixed, not searched)."
)

# Largest finite value list we build: a float range, or one key of `grid()`.
MAX_VALUES = 100_000

_SCALARS = (str, int, float, bool)


# --------------------------------------------------------------------------- Hydra parser


def _interval(start: Union[int, float], end: Union[int, float]) -> IntervalSweep:
    """Hydra's `interval()`, keeping int ends int (Hydra's own returns float(start), float(end)).

    Hydra type-checks call arguments against these annotations at run time, so this module
    must not use `from __future__ import annotations` (it would turn them into strings).
    """
    if isinstance(start, bool) or isinstance(end, bool):
        raise ValueError("interval() takes numbers, not true/false")
    return IntervalSweep(start=start, end=end)


@functools.lru_cache(maxsize=1)
def _parser() -> OverridesParser:
    """Hydra's OverridesParser with its standard function table; only `interval` keeps int types.

    Hydra checks call arguments against each function's signature, so the replacement has
    the same signature as Hydra's `interval`.
    """
    functions = create_functions()  # Hydra's public factory of its function table; `interval` swapped
    del functions.definitions["interval"], functions.functions["interval"]
    functions.register(name="interval", func=_interval)
    return OverridesParser(functions=functions)


def _hydra_detail(err: Exception, line: str) -> str:
    """The useful part of an OverrideParseException message, on one line."""
    lines = [ln for ln in str(err).splitlines() if ln.strip()]
    out: list[str] = []
    for i, ln in enumerate(lines):
        if ln.startswith("See https://hydra.cc") or ln.startswith("Error parsing override"):
            continue
        if ln.startswith("LexerNoViableAltException: "):
            caret = lines[i + 1] if i + 1 < len(lines) else ""
            pos = caret.find("^") - len("LexerNoViableAltException: ")
            if caret.strip() == "^" and 0 <= pos < len(line):
                out.append(f"unexpected character {line[pos]!r}")
            else:
                out.append("unexpected character")
            break
        out.append(ln.strip())
    return "; ".join(out) or str(err).splitlines()[0]


def _parse_line(line: str) -> Override:
    """Parse one `key=value` override line; OverrideParseException on bad syntax."""
    return _parser().parse_overrides([line])[0]


# --------------------------------------------------------------------------- SearchSpace


@dataclass(frozen=True)
class SearchSpace:
    """Searched keys (Optuna distributions, in the space's order) and fixed keys (plain values)."""

    distributions: dict[str, BaseDistribution]
    fixed: dict[str, Any]
    where: str = field(default="sweep.space", compare=False)  # prefixes error messages

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Sample every distribution with `trial.suggest_*`; return {key: value} plus the fixed keys."""
        params: dict[str, Any] = {}
        for key, dist in self.distributions.items():
            if isinstance(dist, FloatDistribution):
                params[key] = trial.suggest_float(key, dist.low, dist.high, step=dist.step, log=dist.log)
            elif isinstance(dist, IntDistribution):
                params[key] = trial.suggest_int(key, dist.low, dist.high, step=dist.step, log=dist.log)
            elif isinstance(dist, CategoricalDistribution):
                params[key] = trial.suggest_categorical(key, list(dist.choices))
            else:
                raise ConfigError(
                    f"{self.where}.{key}: unsupported distribution {type(dist).__name__}; {GRAMMAR_HINT}"
                )
        params.update(self.fixed)
        return params

    def center(self) -> dict[str, Any]:
        """The middle of every searched key: an interval's midpoint (its geometric mean when log),
        on its step; a choice's middle value (of two middles, the later). Fixed keys are left out."""
        out: dict[str, Any] = {}
        for key, dist in self.distributions.items():
            if isinstance(dist, CategoricalDistribution):
                out[key] = dist.choices[len(dist.choices) // 2]
                continue
            mid = math.sqrt(dist.low * dist.high) if dist.log else (dist.low + dist.high) / 2
            step = getattr(dist, "step", None)
            if step:
                mid = dist.low + round((mid - dist.low) / step) * step
            out[key] = min(max(int(round(mid)) if isinstance(dist, IntDistribution) else float(mid), dist.low),
                           dist.high)
        return out

    def extremes(self) -> dict[str, list]:
        """Each searched key's every choice, or the ends of its range (a continuous float's high
        just below it): what a plan checks against the config before any trial runs."""
        out: dict[str, list] = {}
        for key, dist in self.distributions.items():
            if isinstance(dist, CategoricalDistribution):
                out[key] = list(dist.choices)
            elif isinstance(dist, FloatDistribution) and dist.step is None:
                out[key] = [dist.low, math.nextafter(dist.high, dist.low)]
            else:
                out[key] = [dist.low, dist.high]
        return out

    def grid(self) -> dict[str, list]:
        """Every searched key's finite value list, for `optuna.samplers.GridSampler`."""
        out: dict[str, list] = {}
        for key, dist in self.distributions.items():
            label = f"{self.where}.{key}"
            if isinstance(dist, CategoricalDistribution):
                values = list(dist.choices)
            elif isinstance(dist, IntDistribution):
                n = (dist.high - dist.low) // dist.step + 1
                _check_count(n, label, "a grid")
                values = list(range(dist.low, dist.high + 1, dist.step))
            elif isinstance(dist, FloatDistribution) and dist.step is not None:
                n = int(round((dist.high - dist.low) / dist.step)) + 1
                _check_count(n, label, "a grid")
                values = [dist.low + i * dist.step for i in range(n)]
            else:
                raise ConfigError(
                    f"{label}: a grid search needs a finite list of values, but this key is a "
                    f"continuous interval ({_describe(dist)}). Use choice(a,b,...) or "
                    f"range(start,stop,step) (stop excluded) for it, or pick a non-grid sampler."
                )
            out[key] = values
        return out

    def as_overrides(self, params: Mapping[str, Any]) -> list[str]:
        """Hydra override strings (`['model.k=64', "train.optimizer=adam", ...]`) for sampled params.

        Strings are written bare when Hydra reads them back unchanged and they hold no
        whitespace, else single-quoted (Hydra's escaping): '1', 'true', 'a,b', 'x y', "it's".
        """
        return [f"{key}={format_value(value, f'{self.where}.{key}')}" for key, value in params.items()]


def format_value(value: Any, label: str = "value") -> str:
    """One value as the right-hand side of a Hydra override that parses back to `value`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        value = float(value)
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        if not value or any(c.isspace() for c in value):  # '' and 'a b' parse bare, but read badly in a shell
            return QuotedString(text=value, quote=Quote.single).with_quotes()
        try:
            parsed = _parse_line(f"x={value}")
            if parsed.value_type == ValueType.ELEMENT and type(parsed.value()) is str and parsed.value() == value:
                return value
        except (OverrideParseException, HydraException):
            pass
        return QuotedString(text=value, quote=Quote.single).with_quotes()
    raise ConfigError(
        f"{label}: cannot write {value!r} ({type(value).__name__}) as a Hydra override; "
        "sampled values must be int, float, str, bool or null."
    )


# --------------------------------------------------------------------------- parse_space


def parse_space(space: Mapping[str, Any], where: str = "sweep.space") -> SearchSpace:
    """Turn {dotted key: expression or plain value} into a SearchSpace (see the module docstring)."""
    items = _plain_items(space, where)
    distributions: dict[str, BaseDistribution] = {}
    fixed: dict[str, Any] = {}
    for key, raw in items.items():
        label = f"{where}.{key}"
        is_dist, value = _parse_entry(key, raw, label)
        if is_dist:
            distributions[key] = value
        else:
            fixed[key] = value
    return SearchSpace(distributions=distributions, fixed=fixed, where=where)


def _plain_items(space: Any, where: str) -> dict[str, Any]:
    if space is None:
        return {}
    if isinstance(space, DictConfig):
        try:
            space = OmegaConf.to_container(space, resolve=True)
        except Exception as err:  # an interpolation that does not resolve
            raise ConfigError(f"{where}: cannot resolve the search space: {err}") from None
    if not isinstance(space, Mapping):
        raise ConfigError(
            f"{where}: expected a mapping of config keys to expressions "
            f"(e.g. 'model.k: choice(16,32,64)'), got {type(space).__name__}."
        )
    out: dict[str, Any] = {}
    for key, value in space.items():
        if not isinstance(key, str) or not key.strip():
            raise ConfigError(f"{where}: key {key!r} must be a dotted config key such as 'model.k'.")
        out[key.strip()] = value
    return out


def _check_key(key: str, label: str) -> None:
    try:
        override = _parse_line(f"{key}=0")
    except (OverrideParseException, HydraException):
        raise ConfigError(f"{label}: {key!r} is not a valid config key; use a dotted key such as 'model.k'.") from None
    if override.type != OverrideType.CHANGE or override.package is not None:
        raise ConfigError(
            f"{label}: write the plain config key ('{override.key_or_group}'); "
            "'+', '++', '~' and '@package' belong to command-line overrides, not to a search space."
        )


def _parse_entry(key: str, raw: Any, label: str) -> tuple[bool, Any]:
    """(True, distribution) for a searched key, (False, value) for a fixed one."""
    _check_key(key, label)
    if isinstance(raw, (DictConfig, ListConfig)):
        raw = OmegaConf.to_container(raw, resolve=True)
    if raw is None or isinstance(raw, (bool, int, float)):
        return False, raw
    if isinstance(raw, (list, tuple)):
        raise ConfigError(
            f"{label} = {raw!r}: a list is not a search space; to search over these values write "
            f"choice({','.join(_choice_arg(v) for v in raw)}). {GRAMMAR_HINT}"
        )
    if isinstance(raw, Mapping):
        raise ConfigError(
            f"{label}: a nested mapping is not a search space; write one dotted key per "
            f"parameter, e.g. '{key}.<name>: choice(a,b)'. {GRAMMAR_HINT}"
        )
    if not isinstance(raw, str):
        raise ConfigError(f"{label} = {raw!r}: unsupported {type(raw).__name__}. {GRAMMAR_HINT}")

    expr = raw.strip()
    line = f"{key}={expr}"
    try:
        override = _parse_line(line)
    except (OverrideParseException, HydraException) as err:
        raise ConfigError(f"{label} = {expr!r}: {_hydra_detail(err, line)}. {GRAMMAR_HINT}") from None

    def bad(problem: str) -> ConfigError:
        return ConfigError(f"{label} = {expr!r}: {problem}. {GRAMMAR_HINT}")

    value = override.value()
    vtype = override.value_type
    if vtype == ValueType.ELEMENT:
        if isinstance(value, list):
            raise bad(
                f"a list is not a search space; to search over these values write "
                f"choice({','.join(_choice_arg(v) for v in value)})"
            )
        if isinstance(value, dict):
            raise bad("a dict is not a search space value")
        return False, value
    if vtype == ValueType.GLOB_CHOICE_SWEEP or isinstance(value, Glob):
        raise bad("glob() selects config-group options, which Optuna cannot sample; list them with choice(a,b,...)")
    if isinstance(value, ChoiceSweep):
        return True, _choice(value, bad)
    if isinstance(value, RangeSweep):
        return True, _range(value, bad)
    if isinstance(value, IntervalSweep):
        return True, _interval_dist(value, bad)
    raise bad(f"unsupported expression ({type(value).__name__})")


def _choice_arg(v: Any) -> str:
    try:
        return format_value(v)
    except ConfigError:
        return str(v)


def _check_tags(tags: set[str], allowed: set[str], bad: Any, what: str) -> None:
    unknown = sorted(set(tags) - {"log"})
    if unknown:
        raise bad(f"unknown tag(s) {', '.join(unknown)}: only tag(log, ...) is supported")
    if set(tags) - allowed:
        raise bad(f"tag(log, ...) does not apply to {what}; use it on interval(low,high)")


def _choice(sweep: ChoiceSweep, bad: Any) -> CategoricalDistribution:
    _check_tags(sweep.tags, set(), bad, "choice(...)")
    values = list(sweep.list)
    if not values:
        raise bad("choice() needs at least one value")
    for v in values:
        if isinstance(v, ChoiceSweep):
            raise bad("nested choices are not supported")
        if not isinstance(v, _SCALARS):
            raise bad(f"choice values must be numbers, strings or true/false, got {type(v).__name__} {v!r}")
    for i, a in enumerate(values):
        for b in values[:i]:
            if a == b:  # Optuna stores a categorical by index and cannot tell 1, 1.0 and true apart
                raise bad(f"choice values must be distinct, but {b!r} and {a!r} are equal")
    return CategoricalDistribution(values)


def _decimal(x: Union[int, float]) -> Decimal:
    return Decimal(x) if isinstance(x, int) else Decimal(repr(float(x)))


def _check_count(n: int, label_or_bad: Any, what: str) -> None:
    if n > MAX_VALUES:
        msg = f"{n} values is too many for {what} (at most {MAX_VALUES}); use interval(low,high) or a coarser step"
        if callable(label_or_bad):
            raise label_or_bad(msg)
        raise ConfigError(f"{label_or_bad}: {msg}.")


def _range(sweep: RangeSweep, bad: Any) -> BaseDistribution:
    start, stop, step = sweep.start, sweep.stop, sweep.step
    for name, x in (("start", start), ("stop", stop), ("step", step)):
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise bad(f"range() {name} must be a number, got {x!r}")
        if not math.isfinite(x):
            raise bad(f"range() {name} must be finite, got {x!r}")
    if step == 0:
        raise bad("range() step must not be 0")
    empty = "range(start,stop,step) produces no values (stop is excluded, and a positive step needs start < stop)"
    log = "log" in sweep.tags

    if all(isinstance(x, int) for x in (start, stop, step)):
        _check_tags(sweep.tags, {"log"}, bad, "range(...)")
        r = range(start, stop, step)
        if len(r) == 0:
            raise bad(empty)
        low, high = min(r[0], r[-1]), max(r[0], r[-1])
        if log:
            if abs(step) != 1:
                raise bad("tag(log, range(...)) needs step 1 (Optuna's log int distribution has no step)")
            if low < 1:
                raise bad(f"tag(log, ...) needs low > 0, got {low}")
            return IntDistribution(low, high, log=True)
        return IntDistribution(low, high, step=abs(step))

    _check_tags(sweep.tags, set(), bad, "a float range(...)")
    d_start, d_stop, d_step = _decimal(start), _decimal(stop), _decimal(step)
    n = int(((d_stop - d_start) / d_step).to_integral_value(rounding=ROUND_CEILING))
    if n <= 0:
        raise bad(empty)
    _check_count(n, bad, "a float range")
    values = sorted(float(d_start + i * d_step) for i in range(n))
    low, fstep = values[0], float(abs(d_step))
    if all(low + i * fstep == v for i, v in enumerate(values)):
        return FloatDistribution(low, values[-1], step=fstep)
    return CategoricalDistribution(values)


def _interval_dist(sweep: IntervalSweep, bad: Any) -> BaseDistribution:
    _check_tags(sweep.tags, {"log"}, bad, "interval(...)")
    low, high = sweep.start, sweep.end
    for name, x in (("low", low), ("high", high)):
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
            raise bad(f"interval() {name} must be a finite number, got {x!r}")
    if low >= high:
        raise bad(f"interval(low,high) needs low < high, got low={low} high={high}")
    log = "log" in sweep.tags
    if log and low <= 0:
        raise bad(f"tag(log, ...) needs low > 0, got {low}")
    if isinstance(low, int) and isinstance(high, int):
        return IntDistribution(low, high, log=log)
    return FloatDistribution(float(low), float(high), log=log)


def _describe(dist: BaseDistribution) -> str:
    if isinstance(dist, (FloatDistribution, IntDistribution)):
        return f"{type(dist).__name__}(low={dist.low}, high={dist.high}, log={dist.log}, step={dist.step})"
    return repr(dist)


# --------------------------------------------------------------------------- command line


def merge_space_overrides(space: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply command-line overrides to a space mapping, with Hydra's prefix rules.

    ``key=expr`` replaces a key already in the space, ``+key=expr`` adds a new one,
    ``++key=expr`` does either, ``~key`` removes one. The override is split into key and
    expression by Hydra's parser; the expression text is stored as written (quotes kept), so
    `parse_space` reads it back exactly as Hydra would. Order: existing keys, then new ones.
    """
    merged = _plain_items(space, "sweep.space")
    for text in overrides:
        text = text.strip()
        try:
            override = _parse_line(text)
        except (OverrideParseException, HydraException) as err:
            raise ConfigError(
                f"sweep override {text!r}: {_hydra_detail(err, text)}. Write key=expression; {GRAMMAR_HINT}"
            ) from None
        key = override.key_or_group
        if override.package is not None:
            raise ConfigError(f"sweep override {text!r}: '@package' has no meaning in a search space; write {key}=...")
        if override.is_delete():
            if key not in merged:
                raise ConfigError(f"sweep override {text!r}: cannot remove '{key}', it is not in the search space.")
            del merged[key]
            continue
        expr = text.split("=", 1)[1].strip()
        if override.is_add() and key in merged:
            raise ConfigError(
                f"sweep override {text!r}: '{key}' is already in the search space; "
                f"write {key}=... (no '+') to replace it, or ++{key}=..."
            )
        if override.type == OverrideType.CHANGE and key not in merged:
            raise ConfigError(
                f"sweep override {text!r}: '{key}' is not in the search space; "
                f"write +{key}=... to add it, or ++{key}=... to add or replace."
            )
        merged[key] = expr
    return merged
