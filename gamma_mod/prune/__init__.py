"""Training-free token pruners (FastV, PDrop) as inference strategies of any gamma_mod model.

The registry below is the one list: a new pruner is one module with a `TokenPruner` subclass and
one line here. A pruner is configured by a dict (the config.json `prune` section,
{"method": "fastv", "k": 2, "r": 0.5}) or a command-line spec ("fastv:K=2,R=0.5",
"pdrop:layers=8,16,24,lambda=0.5"); `build_pruner` turns either into a pruner.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .base import QUERY_MODES, PrunerConfigError, Stage, TokenPruner
from .fastv import FastVConfig, FastVPruner
from .pdrop import PDropConfig, PDropPruner

PRUNERS: dict[str, type[TokenPruner]] = {
    "fastv": FastVPruner,
    "pdrop": PDropPruner,
}

# Spellings accepted on the command line for the config fields (the papers write K, R and lambda).
ALIASES = {"lambda": "lam", "λ": "lam", "ratio": "ratios", "layer": "layers"}


def parse_pruner_spec(text: str) -> dict[str, Any] | None:
    """"fastv:K=2,R=0.5" -> {"method": "fastv", "k": 2, "r": 0.5}; "none" -> None.

    Items are comma-separated `key=value`; an item without "=" continues the previous key's list
    ("layers=8,16,24,lambda=0.5"). Numbers become int or float; keys are case-insensitive.
    """
    text = text.strip()
    if text.lower() in ("", "none", "off"):
        return None
    method, _, rest = text.partition(":")
    options: dict[str, Any] = {"method": method.strip().lower()}
    key = None
    for item in filter(None, (x.strip() for x in rest.split(","))):
        if "=" in item:
            key, value = (s.strip() for s in item.split("=", 1))
            key = ALIASES.get(key.lower(), key.lower())
            options[key] = _number(value)
        elif key is None:
            raise PrunerConfigError(f"pruner spec {text!r}: {item!r} is not key=value")
        else:
            previous = options[key]
            options[key] = [*(previous if isinstance(previous, list) else [previous]), _number(item)]
    return options


def _number(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def build_pruner(spec: str | dict[str, Any] | TokenPruner | None) -> TokenPruner | None:
    """A pruner from a spec string, a config dict or a pruner; None (or "none") for no pruning."""
    if spec is None or isinstance(spec, TokenPruner):
        return spec
    options = parse_pruner_spec(spec) if isinstance(spec, str) else dict(spec)
    if options is None:
        return None
    method = options.pop("method", None)
    if method not in PRUNERS:
        raise PrunerConfigError(f"prune.method must be one of {sorted(PRUNERS)}, got {method!r}")
    cls = PRUNERS[method]
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise PrunerConfigError(f"{method}: unknown options {unknown}; accepted: {sorted(fields)}")
    for name in ("layers", "ratios"):
        if name in options and not isinstance(options[name], (list, tuple)) and options[name] is not None:
            options[name] = [options[name]]
    return cls(cls.Config(**options))


__all__ = ["PRUNERS", "QUERY_MODES", "FastVConfig", "FastVPruner", "PDropConfig", "PDropPruner", "PrunerConfigError",
           "Stage", "TokenPruner", "build_pruner", "parse_pruner_spec"]
