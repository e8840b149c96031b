"""Composed recipes: a recipe is a short list of fragments plus overrides.

A recipe YAML may carry a ``compose:`` list of other YAML files (paths relative to the file that
names them). They are deep-merged in order (mappings merge key by key, everything else is
replaced), then the recipe's own keys are merged on top. Fragments may compose further fragments.
The result is a plain LightningCLI config: ``videossl fit --config RECIPE --print_config`` shows it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from videossl.errors import VideosslError

COMPOSE_KEY = "compose"


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            # a fragment switching class_path replaces init_args rather than mixing two classes
            if "class_path" in v and v.get("class_path") != out[k].get("class_path"):
                out[k] = dict(v)
            else:
                out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def load_recipe(path: str | os.PathLike, _stack: tuple[Path, ...] = ()) -> dict[str, Any]:
    p = Path(path).resolve()
    if not p.is_file():
        where = f" (composed from {_stack[-1]})" if _stack else ""
        raise VideosslError(f"recipe {path} does not exist{where}")
    if p in _stack:
        raise VideosslError(f"recipe {p} composes itself: {' -> '.join(map(str, _stack + (p,)))}")
    try:
        body = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise VideosslError(f"recipe {p} is not valid YAML: {e}") from None
    if not isinstance(body, dict):
        raise VideosslError(f"recipe {p} must be a mapping at the top level")
    parts = body.pop(COMPOSE_KEY, []) or []
    if isinstance(parts, str):
        parts = [parts]
    merged: dict[str, Any] = {}
    for part in parts:
        merged = deep_merge(merged, load_recipe(p.parent / part, _stack + (p,)))
    return deep_merge(merged, body)


def write_resolved(recipe: dict[str, Any], path: str | os.PathLike) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return out
