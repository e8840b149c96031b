"""Run folder → method, encoder and weights: the one resolver every ``videossl eval`` command uses.

* :func:`build_method` builds the LightningModule of a run's (or recipe's) ``model:`` entry with
  jsonargparse, as LightningCLI does;
* :func:`encoder_spec_from_run` reads the encoder's ``{class_path, init_args}`` from the run's
  ``config.yaml``; which init argument is the encoder is the method class's business
  (:attr:`videossl.methods.base.SSLMethod.encoder_arg`), so eval knows no method's argument names;
* weights are read only through :func:`videossl.core.checkpoint.load_state`: :func:`load_weights`
  for an encoder (``--prefix``/``--key-map``; a missing key is an error, unexpected keys are
  returned), :func:`load_method_weights` for a whole method (every key must match).

Encoder architecture: ``--encoder`` (a registry name such as ``tv-swin3d_t`` / ``small3d`` /
``vivit``, or JSON ``{class_path, init_args}``) > the spec stored in an encoder file given as
``--weights`` > the eval config's ``encoder:`` > the run's ``config.yaml``. Weights: ``--weights``
(alias ``--ckpt``: a Lightning checkpoint, an ``encoder.pt``, an encoder file, any state dict, or
for a ``tv-*`` encoder a torchvision weight enum name found in the torch hub cache) >
``<run>/encoder.pt``.

Every load is described by a :class:`WeightsInfo` (source, conversion, sha256, missing / unexpected
keys) that the commands print in the report's protocol block. A *conversion* (an encoder file, or a
torchvision state dict whose classifier a ``tv-*`` encoder drops) must use every key of the file and
set every parameter, else the load fails with the list of keys; a videossl checkpoint must fill
every parameter (unexpected keys are listed).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import ArgumentParser
from torch import nn

from videossl.core.checkpoint import load_state, read_encoder_meta, read_file, read_state_dict
from videossl.errors import VideosslError
from videossl.methods.base import SSLMethod
from videossl.models.encoders import ENCODERS, input_checks, registry_spec

__all__ = ["WeightsInfo", "build_encoder", "build_from_spec", "build_method", "check_views", "encoder_arg",
           "encoder_spec_from_run", "encoders_to_evaluate", "file_hash", "load_encoder", "load_method_weights",
           "load_weights", "method_class",
           "part_from_run", "no_weights_lines", "parse_encoder", "parse_key_map", "random_init_spec",
           "resolve_encoder", "run_config"]


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


def part_from_run(run: Path, part: str) -> tuple[dict[str, Any], Path, str]:
    """(spec, ``<run>/checkpoints/last.ckpt``, state-dict prefix) of one of a run's encoders, by the part name
    its method gives it (:meth:`videossl.methods.base.SSLMethod.encoder_parts`: e.g. BraVe's ``audio``)."""
    cfg, cfg_path = run_config(run)
    model = cfg.get("model") or {}
    init = model.get("init_args") or {}
    parts = method_class(model).encoder_parts(init) if model.get("class_path") else {}
    if part not in parts:
        raise VideosslError(f"the run {run} ({model.get('class_path')}) has no encoder part {part!r}; its parts: "
                            f"{', '.join(parts) or 'none'}")
    arg_path, prefix = parts[part]
    node: Any = init
    for k in arg_path.split("."):
        if not isinstance(node, dict) or k not in node:
            raise VideosslError(f"cannot find model.init_args.{arg_path} in {cfg_path}")
        node = node[k]
    ckpt = Path(run) / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        raise VideosslError(f"{ckpt} not found: the {part} encoder's weights are in the run's Lightning checkpoint "
                            "(or give --weights)")
    return node, ckpt, prefix


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


def parse_encoder(text: str) -> dict[str, Any]:
    """``--encoder``: a registry name (``tv-swin3d_t``, ``small3d``, ...) or a JSON ``{class_path, init_args}``."""
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise VideosslError(f"--encoder is not valid JSON: {e}") from None
    if text in ENCODERS:
        return registry_spec(text)
    raise VideosslError(f"--encoder {text!r} is neither a registry name ({', '.join(sorted(ENCODERS))}) nor a JSON "
                        "{class_path, init_args} spec")


def resolve_encoder(args: argparse.Namespace, cfg_encoder: dict[str, Any] | None,
                    need_weights: bool = True) -> tuple[dict[str, Any], Path | None]:
    """(encoder spec, ``--weights`` / ``<run>/encoder.pt`` or None) from ``--encoder/--run/--weights`` and the
    eval config. The weights may name a file or, for an encoder that resolves names (``tv-*``), an enum name."""
    run = Path(args.run) if args.run else None
    if run is not None and not run.is_dir():
        raise VideosslError(f"run folder {run} does not exist")
    ckpt = Path(args.ckpt) if args.ckpt else (run / "encoder.pt" if run is not None else None)
    meta = read_encoder_meta(ckpt) if ckpt is not None and ckpt.is_file() and not args.encoder else None
    if args.encoder:
        spec = parse_encoder(args.encoder)
    elif meta is not None:
        spec = dict(meta["spec"])
    elif cfg_encoder:
        spec = cfg_encoder
    elif run is not None:
        spec = encoder_spec_from_run(run)
    else:
        raise VideosslError("no encoder: give --run, --encoder (a name or JSON), an encoder file as --weights, "
                            "or an `encoder:` in the eval config")
    if need_weights and ckpt is None:
        raise VideosslError("no weights: give --run or --weights (or --random-only)")
    return spec, ckpt


@dataclass
class WeightsInfo:
    """Where an encoder's weights came from and how they were loaded (the report's protocol block)."""

    path: str
    source: str
    conversion: str = "none"
    sha256: str | None = None
    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        def keys(name, ks):
            return f"{len(ks)} {name}" + (f" ({', '.join(ks[:10])}{' ...' if len(ks) > 10 else ''})" if ks else "")
        return [f"weights source: {self.source}",
                f"conversion: {self.conversion}",
                f"checkpoint: {self.path}" + (f" (sha256 {self.sha256})" if self.sha256 else ""),
                f"keys: {self.loaded} loaded, {keys('missing', self.missing)}, {keys('unexpected', self.unexpected)}"]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def no_weights_lines() -> list[str]:
    """The protocol block's weights lines for a randomly initialised encoder."""
    return ["weights source: none (random init)", "conversion: none", "checkpoint: none"]


def _resolve_path(encoder: nn.Module, ckpt: Path) -> tuple[Path, str | None]:
    """(file, source or None) of ``ckpt``: a file, or a name the encoder resolves (``tv-*``: a weight enum)."""
    if ckpt.is_file():
        return ckpt, None
    resolve = getattr(encoder, "resolve_weights", None)
    if resolve is None:
        raise VideosslError(f"checkpoint {ckpt} does not exist")
    path, source = resolve(str(ckpt))
    return Path(path), source


def load_encoder(encoder: nn.Module, ckpt: Path, prefix: str = "encoder.", key_map: dict[str, str] | None = None,
                 run: Path | None = None) -> WeightsInfo:
    """Load ``ckpt`` into ``encoder`` (see the module docstring for the rules) and describe the load."""
    path, source = _resolve_path(encoder, ckpt)
    obj = read_file(path)
    meta = read_encoder_meta(obj)
    state = read_state_dict(obj)
    convert = getattr(encoder, "convert_reference", None)
    hint = "check the encoder architecture (--encoder / the run's config), --prefix and --key-map"
    if meta is not None:  # an encoder file: a conversion someone ran; nothing may be left over
        source = str(meta.get("source", "unknown"))
        if meta.get("source_path"):  # the reference file `videossl convert` read, and its hash
            source += f" {meta['source_path']}" + (f" ({meta['source_hash']})" if meta.get("source_hash") else "")
        source += " (encoder file)"
        conversion = str(meta.get("conversion") or "none")
        report = load_state(encoder, state, prefix="encoder.", allow_missing=False, allow_unexpected=False,
                            what=str(path), hint="the encoder file does not fit its own spec: re-convert it")
    elif convert is not None and key_map is None and (not prefix or not any(k.startswith(prefix) for k in state)):
        state, conversion = convert(state)  # a reference (torchvision) state dict
        source = source or f"file {path}"
        report = load_state(encoder, state, allow_missing=False, allow_unexpected=False, what=str(path), hint=hint)
    else:
        if run is not None and path == run / "encoder.pt":
            source = f"run {run}"
        elif source is None:
            source = f"run checkpoint {path}" if prefix == "encoder." else f"file {path}"
        rules = [f"prefix {prefix!r}"] if prefix != "encoder." else []
        rules += [f"key map {json.dumps(key_map)}"] if key_map else []
        conversion = ", ".join(rules) or "none"
        report = load_state(encoder, state, prefix=prefix, key_map=key_map, allow_missing=False, what=str(path), hint=hint)
    loaded = len(encoder.state_dict()) - len(report.missing)
    return WeightsInfo(str(path), source, conversion, file_hash(path), loaded, list(report.missing),
                       list(report.unexpected))


def build_encoder(spec: dict[str, Any], ckpt: Path | None, prefix: str = "encoder.",
                  key_map: dict[str, str] | None = None, console=None, run: Path | None = None
                  ) -> tuple[nn.Module, WeightsInfo | None]:
    """``spec`` built (the caller seeds the RNG) and, with ``ckpt``, loaded; unexpected keys are noted on ``console``."""
    enc = build_from_spec(spec)
    if ckpt is None:
        return enc, None
    info = load_encoder(enc, ckpt, prefix=prefix, key_map=key_map, run=run)
    if info.unexpected and console is not None:
        console.print(f"[yellow]note[/]: {len(info.unexpected)} unexpected key(s) ignored, e.g. {info.unexpected[:3]}")
    return enc, info


def random_init_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` without a ``weights`` init argument (the random-init baseline must not load pretrained weights)."""
    init = {k: v for k, v in (spec.get("init_args") or {}).items() if k != "weights"}
    return {**spec, "init_args": init}


def check_views(encoder: nn.Module, views: list[dict[str, Any]], console, what: str = "eval view") -> None:
    """The views' frames / size / normalisation against what ``encoder`` declares: an error where it cannot run
    them (one line), a note on the console otherwise (size it is not built for, other normalisation)."""
    for v in views:
        aug = v.get("augment") or {}
        checks = input_checks(encoder, int(v.get("frames", 16)), int(v.get("size", 224)), aug.get("mean"), aug.get("std"),
                              what=f"{what} {v.get('name', 'clip')!r}")
        for c in checks:
            if c.level == "error":
                raise VideosslError(f"{c.message}: change the recipe's views (frames / size)")
            if console is not None:
                console.print(f"[yellow]note[/]: {c.message}", soft_wrap=True, highlight=False)


def encoders_to_evaluate(args: argparse.Namespace, spec: dict[str, Any], ckpt: Path | None, console
                         ) -> tuple[list[tuple[str, nn.Module]], WeightsInfo | None]:
    """[(name, encoder)] for pretrained and/or random init, and how the pretrained weights were loaded."""
    out, info = [], None
    if not args.random_only:
        torch.manual_seed(args.seed)
        enc, info = build_encoder(spec, ckpt, prefix=args.prefix, key_map=parse_key_map(args.key_map), console=console,
                                  run=Path(args.run) if args.run else None)
        out.append(("pretrained", enc))
    if args.compare_random or args.random_only:
        torch.manual_seed(args.seed)
        out.append(("random-init", build_from_spec(random_init_spec(spec))))
    return out, info
