"""Registry of reward terms and presets, and ``make(spec)``.

Spec forms accepted by :func:`make`:

* a registered term or preset name: ``"in_key"``, ``"theory"``;
* a :class:`~rewards.base.RewardTerm` or :class:`~rewards.base.CompositeReward` object;
* a list of names/objects (weight 1 each, presets expanded): ``["in_key", "motif"]``;
* a mapping of name -> weight or name -> ``{weight: w, **kwargs}``:
  ``{"in_key": 2.0, "range": {"weight": 0.5, "low": 55, "high": 79}}`` (a preset name
  maps to a weight that multiplies all its terms);
* a path to a YAML file holding such a mapping (``.yml``/``.yaml``, read with
  ``yaml.safe_load``);
* an import path ``"package.module:ClassName"`` of a term class outside this package
  (how learned terms in ``agents`` are reached without importing torch here).
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rewards.base import CompositeReward, RewardSpecError, RewardTerm

__all__ = ["register", "make", "available", "get", "PRESETS", "register_preset", "LAZY_TERMS"]

_REGISTRY: dict[str, type[RewardTerm]] = {}

#: Presets: name -> {term name: weight or {weight, **kwargs}}.
PRESETS: dict[str, dict[str, Any]] = {}

#: Terms that live outside ``rewards`` (they need torch); imported only when named.
LAZY_TERMS: dict[str, str] = {}


def register(name: str):
    """Class decorator: register a :class:`RewardTerm` subclass under ``name``."""

    def deco(cls: type[RewardTerm]) -> type[RewardTerm]:
        if not (isinstance(cls, type) and issubclass(cls, RewardTerm)):
            raise TypeError(f"@register({name!r}) needs a RewardTerm subclass, got {cls!r}")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"reward term name {name!r} is already registered by {_REGISTRY[name].__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def register_preset(name: str, terms: Mapping[str, Any]) -> None:
    """Register a named composition of terms (validated when first made)."""
    if name in _REGISTRY:
        raise ValueError(f"preset name {name!r} clashes with a reward term")
    PRESETS[name] = dict(terms)


def get(name: str) -> type[RewardTerm]:
    """The term class registered under ``name`` (or a lazily imported one)."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in LAZY_TERMS:
        cls = _import_term(LAZY_TERMS[name])
        _REGISTRY.setdefault(name, cls)
        return cls
    if ":" in name:
        return _import_term(name)
    raise RewardSpecError(f"unknown reward term {name!r}; available: {', '.join(_names())}")


def _names() -> list[str]:
    return sorted(set(_REGISTRY) | set(LAZY_TERMS) | set(PRESETS))


def _import_term(path: str) -> type[RewardTerm]:
    module_name, _, attr = path.partition(":")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise RewardSpecError(f"cannot import reward term {path!r}: {e}") from e
    if not (isinstance(obj, type) and issubclass(obj, RewardTerm)):
        raise RewardSpecError(f"{path!r} is not a RewardTerm subclass")
    return obj


def available() -> dict[str, str]:
    """Every registered term and preset with its one-line summary."""
    out = {name: cls.summary() for name, cls in sorted(_REGISTRY.items())}
    for name, path in LAZY_TERMS.items():
        out.setdefault(name, f"(learned term, imported when first used: {path})")
    for name, terms in PRESETS.items():
        out[name] = "preset: " + ", ".join(f"{t} x{_weight_of(v):g}" for t, v in terms.items())
    return dict(sorted(out.items()))


def _weight_of(v: Any) -> float:
    return float(v.get("weight", 1.0)) if isinstance(v, Mapping) else float(v)


def _check_weight(name: str, w: Any) -> float:
    if isinstance(w, bool) or not isinstance(w, (int, float, np.integer, np.floating)) or not math.isfinite(float(w)):
        raise RewardSpecError(f"weight of reward term {name!r} must be a finite number, got {w!r}")
    return float(w)


def _expand(name: str, value: Any, scale: float, out: list[tuple[str, RewardTerm, float]], depth: int = 0) -> None:
    if depth > 8:
        raise RewardSpecError(f"preset {name!r} nests too deeply (cycle?)")
    if isinstance(value, Mapping):
        kwargs = dict(value)
        weight = _check_weight(name, kwargs.pop("weight", 1.0))
    elif value is None:
        kwargs, weight = {}, 1.0
    else:
        kwargs, weight = {}, _check_weight(name, value)
    if name in PRESETS:
        if kwargs:
            raise RewardSpecError(f"preset {name!r} takes only a weight, got {sorted(kwargs)}")
        for sub, v in PRESETS[name].items():
            _expand(sub, v, scale * weight, out, depth + 1)
        return
    cls = get(name)
    out.append((name, cls(**kwargs), scale * weight))


def make(spec: Any) -> CompositeReward:
    """Build a :class:`CompositeReward` from any spec form (see module doc)."""
    if isinstance(spec, CompositeReward):
        return spec
    if isinstance(spec, RewardTerm):
        return CompositeReward([(spec.name or type(spec).__name__, spec, 1.0)])
    if isinstance(spec, (str, os.PathLike)) and _is_yaml_path(spec):
        return make(_load_yaml(spec))
    terms: list[tuple[str, RewardTerm, float]] = []
    if isinstance(spec, str):
        _expand(spec, None, 1.0, terms)
    elif isinstance(spec, Mapping):
        if not spec:
            raise RewardSpecError("empty reward mapping; give at least one term, e.g. {'in_key': 1.0}")
        for name, value in spec.items():
            if not isinstance(name, str):
                raise RewardSpecError(f"reward term names must be strings, got {name!r}")
            _expand(name, value, 1.0, terms)
    elif isinstance(spec, Sequence):
        for item in spec:
            if isinstance(item, RewardTerm):
                terms.append((item.name or type(item).__name__, item, 1.0))
            elif isinstance(item, str):
                _expand(item, None, 1.0, terms)
            else:
                raise RewardSpecError(f"reward list items must be names or RewardTerm objects, got {item!r}")
    else:
        raise RewardSpecError(
            f"cannot build a reward from {spec!r}; accepted: a term or preset name, a RewardTerm, a list of "
            "names, a {name: weight} or {name: {weight: w, **kwargs}} mapping, or a path to a YAML file"
        )
    return CompositeReward(_merge(terms))


def _merge(terms: list[tuple[str, RewardTerm, float]]) -> list[tuple[str, RewardTerm, float]]:
    """Merge repeats of one term (e.g. from two presets) by adding their weights when
    their parameters agree; differing parameters are an error."""
    merged: dict[str, tuple[str, RewardTerm, float]] = {}
    for name, term, w in terms:
        if name in merged:
            _, old, w0 = merged[name]
            if old != term:
                raise RewardSpecError(f"reward term {name!r} appears twice with different parameters: {old!r} vs {term!r}")
            merged[name] = (name, old, w0 + w)
        else:
            merged[name] = (name, term, w)
    return list(merged.values())


def _is_yaml_path(spec: Any) -> bool:
    s = os.fspath(spec)
    return s.endswith((".yml", ".yaml"))


def _load_yaml(path: Any) -> Any:
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise RewardSpecError(f"cannot read reward spec file {os.fspath(path)!r}: {e}") from e
    except yaml.YAMLError as e:
        raise RewardSpecError(f"reward spec file {os.fspath(path)!r} is not valid YAML: {e}") from e
    if not isinstance(data, (Mapping, list, str)):
        raise RewardSpecError(
            f"reward spec file {os.fspath(path)!r} must hold a mapping of term name -> weight "
            f"(or {{weight, kwargs}}), a list of names or a single name; got {type(data).__name__}"
        )
    if isinstance(data, str) and _is_yaml_path(data):
        raise RewardSpecError(f"reward spec file {os.fspath(path)!r} points to another file; give the terms inline")
    return data
