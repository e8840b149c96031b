"""Run folder → method, encoder and weights: the one resolver every ``videossl eval`` command uses.

* :func:`build_method` builds the LightningModule of a run's (or recipe's) ``model:`` entry with
  jsonargparse, as LightningCLI does;
* :func:`encoder_spec_from_run` reads the encoder's ``{class_path, init_args}`` from the run's
  ``config.yaml``; which init argument is the encoder is the method class's business
  (:attr:`videossl.methods.base.SSLMethod.encoder_arg`), so eval knows no method's argument names;
* weights are read only through :func:`videossl.core.checkpoint.load_state`: :func:`load_weights`
  for an encoder (``--prefix``/``--key-map``; a missing key is an error, unexpected keys are
  returned), :func:`load_method_weights` for a whole method (every key must match).

Encoder architecture: ``--encoder JSON`` > the eval config's ``encoder:`` > the run's
``config.yaml``. Weights: ``--ckpt`` (a Lightning checkpoint, an ``encoder.pt``, or any state
dict) > ``<run>/encoder.pt``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import ArgumentParser
from torch import nn

from videossl.core.checkpoint import load_state
from videossl.errors import VideosslError
from videossl.methods.base import SSLMethod

__all__ = ["build_encoder", "build_from_spec", "build_method", "encoder_arg", "encoder_spec_from_run",
           "encoders_to_evaluate", "file_hash", "load_method_weights", "load_weights", "method_class",
           "parse_key_map", "resolve_encoder", "run_config"]


# ------------------------------------------------------------------------------------ building
def build_from_spec(spec: dict[str, Any]) -> nn.Module:
    """Instantiate ``{class_path, init_args}`` (nested specs too) with jsonargparse, as LightningCLI does."""
    if not isinstance(spec, dict) or "class_path" not in spec:
        raise VideosslError(f"an encoder spec is a mapping with class_path (and init_args), got {spec!r}")
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(nn.Module, "module", required=True)
    try:
        cfg = parser.parse_object({"module": spec})
        return parser.instantiate_classes(cfg).module
    except Exception as e:  # jsonargparse reports bad class paths / args with its own types
        raise VideosslError(f"cannot build encoder from {spec}: {str(e).splitlines()[0]}") from None


def build_method(cfg: dict[str, Any], where: str = "the config",
                 init_overrides: dict[str, Any] | None = None) -> SSLMethod:
    """The LightningModule of a run / recipe config (its ``model:`` entry); ``init_overrides`` replace init args."""
    spec = dict(cfg.get("model") or {})
    if "class_path" not in spec:
        raise VideosslError(f"{where} has no model.class_path")
    if init_overrides:
        spec["init_args"] = {**(spec.get("init_args") or {}), **init_overrides}
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(SSLMethod, "model", required=True)
    try:
        return parser.instantiate_classes(parser.parse_object({"model": spec})).model
    except Exception as e:
        raise VideosslError(f"cannot build the model from {where}: {str(e).splitlines()[0]}") from None


def method_class(spec: dict[str, Any]) -> type:
    """The class named by ``spec['class_path']`` (a dotted path, or a name exported by ``videossl.methods``)."""
    path = str(spec.get("class_path", ""))
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module or "videossl.methods"), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise VideosslError(f"cannot import the model class {path!r}: {e}") from None


def encoder_arg(spec: dict[str, Any]) -> str:
    """The init argument of ``spec``'s method that is its encoder (``SSLMethod.encoder_arg``)."""
    return getattr(method_class(spec), "encoder_arg", "encoder")


# ------------------------------------------------------------------------------------ run folders
def run_config(run: Path) -> tuple[dict[str, Any], Path]:
    """(the run's ``config.yaml`` as a dict, its path)."""
    cfg_path = Path(run) / "config.yaml"
    if not cfg_path.is_file():
        raise VideosslError(f"{run} has no config.yaml: is it a `videossl fit` run folder?")
    return yaml.safe_load(cfg_path.read_text()) or {}, cfg_path


def encoder_spec_from_run(run: Path) -> dict[str, Any]:
    cfg, cfg_path = run_config(run)
    model = cfg.get("model") or {}
    init = model.get("init_args") or {}
    key = encoder_arg(model) if model.get("class_path") else "encoder"
    if isinstance(init.get(key), dict):
        return init[key]
    raise VideosslError(f"cannot find the encoder in {cfg_path} (looked for model.init_args.{key})")


# ------------------------------------------------------------------------------------ weights
def load_weights(encoder: nn.Module, path: Path, prefix: str = "encoder.",
                 key_map: dict[str, str] | None = None) -> dict[str, list[str]]:
    """Load ``path`` into ``encoder``; a missing key is an error (one line), unexpected keys are returned."""
    report = load_state(encoder, path, prefix=prefix, key_map=key_map, allow_missing=False,
                        hint="check the encoder architecture (--encoder / the run's config), --prefix and --key-map")
    return {"missing": report.missing, "unexpected": report.unexpected}


def load_method_weights(model: nn.Module, path: Path) -> None:
    """Load a whole method's weights (a Lightning checkpoint or state dict); every key must match."""
    load_state(model, path, allow_missing=False, allow_unexpected=False)


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


# ------------------------------------------------------------------------------------ from CLI args
def parse_key_map(text: str | None) -> dict[str, str] | None:
    if not text:
        return None
    try:
        km = json.loads(text)
    except json.JSONDecodeError as e:
        raise VideosslError(f"--key-map is not valid JSON: {e}") from None
    if not isinstance(km, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in km.items()):
        raise VideosslError('--key-map must be a JSON object of prefix renames, e.g. {"backbone.": ""}')
    return km


def resolve_encoder(args: argparse.Namespace, cfg_encoder: dict[str, Any] | None,
                    need_weights: bool = True) -> tuple[dict[str, Any], Path | None]:
    """(encoder spec, checkpoint path or None) from ``--encoder/--run/--ckpt`` and the eval config."""
    run = Path(args.run) if args.run else None
    if run is not None and not run.is_dir():
        raise VideosslError(f"run folder {run} does not exist")
    if args.encoder:
        try:
            spec = json.loads(args.encoder)
        except json.JSONDecodeError as e:
            raise VideosslError(f"--encoder is not valid JSON: {e}") from None
    elif cfg_encoder:
        spec = cfg_encoder
    elif run is not None:
        spec = encoder_spec_from_run(run)
    else:
        raise VideosslError("no encoder: give --run, --encoder or an `encoder:` in the eval config")
    ckpt = Path(args.ckpt) if args.ckpt else (run / "encoder.pt" if run is not None else None)
    if need_weights:
        if ckpt is None:
            raise VideosslError("no weights: give --run or --ckpt (or --random-only)")
        if not ckpt.is_file():
            raise VideosslError(f"checkpoint {ckpt} does not exist")
    return spec, ckpt


def build_encoder(spec: dict[str, Any], ckpt: Path | None, prefix: str = "encoder.",
                  key_map: dict[str, str] | None = None, console=None) -> nn.Module:
    """``spec`` built (the caller seeds the RNG) and, with ``ckpt``, loaded; unexpected keys are noted on ``console``."""
    enc = build_from_spec(spec)
    if ckpt is not None:
        keys = load_weights(enc, ckpt, prefix=prefix, key_map=key_map)
        if keys["unexpected"] and console is not None:
            console.print(f"[yellow]note[/]: {len(keys['unexpected'])} unexpected key(s) ignored, e.g. {keys['unexpected'][:3]}")
    return enc


def encoders_to_evaluate(args: argparse.Namespace, spec: dict[str, Any], ckpt: Path | None, console
                         ) -> tuple[list[tuple[str, nn.Module]], str | None]:
    """[(name, encoder)] for pretrained and/or random init, and the checkpoint hash."""
    out, ckpt_hash = [], None
    if not args.random_only:
        torch.manual_seed(args.seed)
        enc = build_encoder(spec, ckpt, prefix=args.prefix, key_map=parse_key_map(args.key_map), console=console)
        ckpt_hash = file_hash(ckpt)
        out.append(("pretrained", enc))
    if args.compare_random or args.random_only:
        torch.manual_seed(args.seed)
        out.append(("random-init", build_from_spec(spec)))
    return out, ckpt_hash
