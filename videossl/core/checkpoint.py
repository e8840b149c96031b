"""The one place that reads weight files.

Every loader in videossl (an encoder for evaluation, a previous training stage, a whole method for
flow or zero-shot evaluation, a ViViT with resized position tables, a feature cache) goes through
this module, so the same rules hold everywhere:

* files are read with ``torch.load(..., map_location="cpu", weights_only=True)``: a file holding
  arbitrary pickled objects is refused with a message that says how to re-save it;
* a Lightning checkpoint's ``state_dict`` entry is used; only tensors are kept;
* ``prefix`` selects keys (stripped), ``key_map`` renames them (a callable, or a dict of prefix
  renames where the longest match wins); keys under ``ignore`` (the online probe) never count;
* shapes are checked before loading (one error naming the first mismatches);
* one :class:`LoadReport` of missing / unexpected keys, which is an error where the caller says so
  (naming every such key) and otherwise a single warning.

An *encoder file* (:func:`save_encoder_file`) is a weight file that also says how to build the
encoder: ``{"state_dict": {"encoder.<key>": tensor}, "videossl_encoder": {"spec": {class_path,
init_args}, "source": ..., ...}}``. It loads like any ``encoder.pt`` (the ``encoder.`` prefix), and
:func:`read_encoder_meta` returns its metadata (``None`` for a plain weight file), so ``--weights
FILE`` alone is enough to evaluate a converted model.
"""

from __future__ import annotations

import logging
import os
import pickle
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from videossl.errors import VideosslError

log = logging.getLogger(__name__)

Source = Mapping[str, Any] | str | os.PathLike
KeyMap = Mapping[str, str] | Callable[[str], str | None]

#: keys of training-time helpers that are never part of a model's weights for loading
IGNORED_PREFIXES: tuple[str, ...] = ("online_probe.",)


@dataclass
class LoadReport:
    """What a load left out: keys the module has that the weights lack, and the reverse."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def __iter__(self):  # ``missing, unexpected = load_state(...)``
        return iter((self.missing, self.unexpected))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, tuple):
            return (self.missing, self.unexpected) == other
        return isinstance(other, LoadReport) and (self.missing, self.unexpected) == (other.missing, other.unexpected)

    @property
    def clean(self) -> bool:
        return not self.missing and not self.unexpected

    def describe(self, limit: int | None = 5) -> str:
        """Counts and keys (the first ``limit`` of each; all with ``limit=None``)."""
        return (f"{len(self.missing)} missing key(s) {self.missing[:limit]}, "
                f"{len(self.unexpected)} unexpected key(s) {self.unexpected[:limit]}")


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file (Hugging Face's ``model.safetensors``), on CPU.

    Needs the ``safetensors`` package (a dependency of ``transformers``: ``pip install 'videossl[hf]'``)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise VideosslError(f"checkpoint not found: {path}")
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise VideosslError(f"reading {path} needs the safetensors package: pip install 'videossl[hf]'") from None
    return load_file(path, device="cpu")


def read_file(path: str | os.PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU, with clear errors (not found; pickled objects).
    A ``.safetensors`` file is read by :func:`read_safetensors`."""
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        return read_safetensors(path)
    if not os.path.isfile(path):
        raise VideosslError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise VideosslError(
            f"refusing to load {path}: it contains pickled objects that weights_only=True does not allow "
            f"({first}); re-save only tensors, e.g. torch.save(model.state_dict(), path)"
        ) from None


def read_state_dict(source: Source) -> dict[str, torch.Tensor]:
    """The tensors of a weight file, a Lightning checkpoint (its ``state_dict``) or a mapping."""
    obj = read_file(source) if isinstance(source, str | os.PathLike) else source
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        what = os.fspath(source) if isinstance(source, str | os.PathLike) else "state dict"
        raise VideosslError(f"{what} is not a state dict (got {type(obj).__name__})")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


#: the entry of an encoder file that holds its build spec and provenance
ENCODER_META_KEY = "videossl_encoder"


def save_encoder_file(path: str | os.PathLike, encoder_state: Mapping[str, torch.Tensor], spec: Mapping[str, Any],
                      **meta: Any) -> None:
    """Write an encoder file: the encoder's tensors under ``encoder.``, its ``{class_path, init_args}`` spec
    and provenance ``meta`` (e.g. ``source="hf-videomae"``, ``conversion=...``, ``source_hash=...``).

    ``meta`` values must be plain data (str, int, float, bool, None, lists and dicts of them) so that the
    file loads with ``weights_only=True``.
    """
    if not isinstance(spec, Mapping) or "class_path" not in spec:
        raise VideosslError(f"an encoder spec is a mapping with class_path (and init_args), got {spec!r}")
    state = {f"encoder.{k}": v.detach().cpu().contiguous() for k, v in encoder_state.items()}
    os.makedirs(os.path.dirname(os.path.abspath(os.fspath(path))), exist_ok=True)
    torch.save({"state_dict": state, ENCODER_META_KEY: {"spec": dict(spec), **meta}}, os.fspath(path))


def read_encoder_meta(source: Source) -> dict[str, Any] | None:
    """The ``{"spec": ..., <provenance>}`` of an encoder file, or ``None`` for a plain weight file."""
    obj = read_file(source) if isinstance(source, str | os.PathLike) else source
    meta = obj.get(ENCODER_META_KEY) if isinstance(obj, Mapping) else None
    if meta is None:
        return None
    if not isinstance(meta, Mapping) or not isinstance(meta.get("spec"), Mapping):
        raise VideosslError(f"{source}: its {ENCODER_META_KEY!r} entry has no spec mapping; re-write it with save_encoder_file")
    return dict(meta)


def top_prefixes(keys) -> list[str]:
    return sorted({k.split(".", 1)[0] + "." if "." in k else k for k in keys})


def apply_key_map(sd: Mapping[str, torch.Tensor], key_map: KeyMap) -> dict[str, torch.Tensor]:
    """Rename keys: a callable ``key -> new key`` (``None`` drops it) or prefix renames (longest first)."""
    out = {}
    if callable(key_map):
        for k, v in sd.items():
            nk = key_map(k)
            if nk is not None:
                out[nk] = v
        return out
    rules = sorted(key_map.items(), key=lambda kv: -len(kv[0]))
    for k, v in sd.items():
        for old, new in rules:
            if k.startswith(old):
                k = new + k[len(old):]
                break
        out[k] = v
    return out


def _ignored(key: str, ignore: Sequence[str]) -> bool:
    return any(key.startswith(p) for p in ignore)


def load_state(
    module: nn.Module,
    source: Source,
    *,
    prefix: str = "",
    key_map: KeyMap | None = None,
    allow_missing: bool = True,
    allow_unexpected: bool = True,
    ignore: Sequence[str] = IGNORED_PREFIXES,
    what: str | None = None,
    hint: str = "",
) -> LoadReport:
    """Load weights into ``module`` and report what did not fit (see the module docstring).

    Raises :class:`VideosslError` when no key starts with ``prefix`` (naming the prefixes found),
    when nothing that remains matches the module, on shape mismatches, and on missing / unexpected
    keys that the caller does not allow (``hint`` is appended: what to check). Allowed leftovers
    are warned about once and returned.
    """
    name = what or (os.fspath(source) if isinstance(source, str | os.PathLike) else "state dict")
    sd = read_state_dict(source)
    if prefix:
        picked = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        if not picked:
            raise VideosslError(
                f"no key in {name} starts with prefix {prefix!r}; prefixes found: {', '.join(top_prefixes(sd)) or 'none'}"
            )
    else:
        picked = dict(sd)
    if key_map is not None:
        picked = apply_key_map(picked, key_map)
    picked = {k: v for k, v in picked.items() if not _ignored(k, ignore)}
    own = module.state_dict()
    if not any(k in own for k in picked):
        raise VideosslError(
            f"no key of {name} (after prefix {prefix!r}) matches the model {type(module).__name__}: "
            f"checkpoint has e.g. {sorted(picked)[:3]}, model has e.g. {list(own)[:3]}; check prefix/key_map and the config"
        )
    bad = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in picked.items() if k in own and v.shape != own[k].shape]
    if bad:
        raise VideosslError(
            f"{len(bad)} tensor(s) in {name} do not fit the encoder {type(module).__name__} (checkpoint vs model shape): "
            f"{'; '.join(bad[:3])}; check width/in_channels/arch"
        )
    result = module.load_state_dict(picked, strict=False)
    report = LoadReport([k for k in result.missing_keys if not _ignored(k, ignore)], list(result.unexpected_keys))
    refused = (report.missing and not allow_missing) or (report.unexpected and not allow_unexpected)
    if refused:
        raise VideosslError(f"{name} does not fit {type(module).__name__}: {report.describe(limit=None)}"
                            + (f"; {hint}" if hint else ""))
    if not report.clean:
        msg = f"loading {name} into {type(module).__name__}: {report.describe()}"
        warnings.warn(msg, stacklevel=2)
        log.warning(msg)
    return report
