"""Typed configs: YAML files in ``configs/`` loaded into dataclasses, with ``key.sub=value`` overrides.

Why our own ~150 lines instead of Hydra/draccus: we need exactly three things, (1) unknown keys are errors
that suggest the nearest valid key, (2) values are type-checked against the dataclass annotations with the
bad value in the message, (3) dotted command-line overrides. Stage configs live beside their stage
(``policy/configuration.py``, ``envs/config.py``, ...); this module only knows dataclasses, not stages.

Each dataclass validates its own values in ``__post_init__`` (raise ``ValueError`` naming the field).
List-of-integer fields are annotated ``IntList``: the loader reads ``"0-49"``, ``"1,2,5"``, ``3`` or a YAML
list into a real ``list[int]`` here, once, for files, overrides and command-line flags alike.

Why not draccus (LeRobot) or pydantic (``extra="forbid"``): draccus does (3) and rejects unknown keys but
its error names no nearest key, and neither parses our ``"0-4,7"`` ranges without a custom decoder per
field; both would add a dependency for the ~200 lines here, which the tests cover key by key
(tests/vla_flow/test_config.py).
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


from vla_flow.errors import UserError


class ConfigError(UserError, ValueError):
    """A config file or override is wrong; the message names the key and the fix."""


class IntList(list):
    """Annotation of a ``list[int]`` field that also reads ranges: ``"0-4,7"`` -> [0, 1, 2, 3, 4, 7]."""


def parse_int_list(text, what: str) -> list[int]:
    """``"0-4,7"`` -> [0, 1, 2, 3, 4, 7]; ``[1, 2]`` and ``3`` pass through. Raises ValueError naming ``what``."""
    import re

    if isinstance(text, bool):
        raise ValueError(f"{what}: expected integers, got {text!r}")
    if isinstance(text, int):
        return [text]
    if isinstance(text, (list, tuple)):
        if any(isinstance(v, bool) or not isinstance(v, (int, str)) for v in text):
            raise ValueError(f"{what}: expected integers, got {list(text)!r}")
        return [x for v in text for x in parse_int_list(v, what)]
    out: list[int] = []
    for part in str(text).replace(" ", "").split(","):
        if not part:
            continue
        m = re.fullmatch(r"(-?\d+)(?:-(\d+))?", part)
        if m is None:
            raise ValueError(f"{what}: cannot parse '{part}' (expected e.g. '0-4,7')")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise ValueError(f"{what}: range '{part}' is empty (end < start)")
        out.extend(range(lo, hi + 1))
    if not out:
        raise ValueError(f"{what}: empty list '{text}'")
    return out


def _similarity(key: str, name: str) -> float:
    """How likely ``name`` is the key that ``key`` meant, in [0, 1].

    The best of: whole-string similarity; an abbreviation (``learning_rate`` -> ``lr``: the initials of
    the parts, or the key's first letters); a prefix (``max_step`` -> ``max_steps``); and the parts matched
    one to one (``lerning_rate`` has the parts of ``learning rate`` misspelt, ``batchsize`` those of
    ``batch_size`` glued)."""
    k, n = key.lower(), name.lower()
    ratio = difflib.SequenceMatcher(None, k, n).ratio()
    parts = [x for x in k.replace("-", "_").split("_") if x]
    initials = "".join(x[0] for x in parts)
    scores = [ratio]
    if len(parts) > 1 and initials == n.replace("_", ""):
        scores.append(0.9)
    if len(n) >= 3 and (k.startswith(n) or n.startswith(k)) and len(k) >= 3:
        scores.append(0.8)
    name_parts = [x for x in n.split("_") if x]
    if len(parts) == len(name_parts) > 1:
        scores.append(min(difflib.SequenceMatcher(None, a, b).ratio() for a, b in zip(parts, name_parts)))
    if k.replace("_", "") == n.replace("_", ""):
        scores.append(0.95)
    return max(scores)


def _suggest(key: str, valid: list[str]) -> str:
    best = max(valid, key=lambda v: (_similarity(key, v), v), default=None)
    hint = f" Did you mean '{best}'?" if best is not None and _similarity(key, best) >= 0.6 else ""
    return f"{hint} Valid keys: {', '.join(sorted(valid))}."


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert ``value`` against annotation ``tp``; raise ConfigError naming ``where``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if tp is IntList:
        try:
            return parse_int_list(value, where)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        if len(errors) == 1:  # Optional[X]: X's own message ("expected a number, got 'abc'"), or null
            raise ConfigError(f"{errors[0]} (or null)")
        raise ConfigError(f"{where}: {value!r} matches none of {str(tp).replace('typing.', '')}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `1e-3` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict, prefix: str = "") -> T:
    """Build dataclass ``cls`` from a nested dict; unknown keys and wrong types raise ConfigError."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            raise ConfigError(f"unknown config key '{where}'." + _suggest(str(key), list(fields)))
        kwargs[key] = _coerce(value, hints[key], where)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{prefix or cls.__name__}: {exc}") from exc


def to_dict(cfg: Any) -> dict:
    """Plain nested dict (lists, not tuples) for YAML/JSON/checkpoints."""
    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(dataclasses.asdict(cfg))


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'train.lr=1e-4'`` -> (['train', 'lr'], 0.0001). Values are parsed as YAML scalars/lists."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.sub=value")
    key, raw = text.split("=", 1)
    if not key:
        raise ConfigError(f"override '{text}' has an empty key")
    return key.strip().split("."), yaml.safe_load(raw) if raw != "" else ""


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Set dotted keys in a nested dict (a copy); validation happens later in from_dict."""
    import copy

    data = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{text}': '{part}' is not a section")
        node[path[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        available = sorted(p.name for p in CONFIG_DIR.glob("*.yaml"))
        raise ConfigError(f"config file not found: {path}. Presets in {CONFIG_DIR}: {', '.join(available)}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def load(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Load ``cls`` from a YAML file (or defaults when ``path`` is None) plus dotted overrides."""
    data = read_yaml(resolve_config_path(path)) if path is not None else {}
    data = apply_overrides(data, overrides or [])
    where = str(path) if path is not None else cls.__name__
    try:
        return from_dict(cls, data)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def resolve_config_path(path: str | Path) -> Path:
    """Accept a path or a preset name (``quickstart`` -> ``configs/quickstart.yaml``)."""
    p = Path(path)
    if p.is_file():
        return p
    for cand in (CONFIG_DIR / p, CONFIG_DIR / f"{p}.yaml"):
        if cand.is_file():
            return cand
    return p  # read_yaml raises with the list of presets
