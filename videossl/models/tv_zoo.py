"""torchvision's video classification zoo as encoders: ``(B, 3, T, H, W) → (B, feature_dim)``.

:class:`TorchvisionVideoEncoder` builds ``torchvision.models.video.<arch>(weights=None)`` (never
downloading anything), replaces its classifier by ``nn.Identity`` and keeps torchvision's own
``forward``, so the features are exactly the input of torchvision's classifier (pooled, before
dropout). The parameter names equal torchvision's minus the classifier, so a torchvision state dict
loads after dropping the head (:meth:`TorchvisionVideoEncoder.convert_reference`).

=============== ============================ ===== ==================================================
arch            feature (classifier input)    D    input (torchvision's weight meta / architecture)
=============== ============================ ===== ==================================================
``r3d_18``      pooled ``layer4`` (``fc``)    512  any T, H, W; Kinetics crops 112
``mc3_18``      same                          512  same
``r2plus1d_18`` same                          512  same
``s3d``         pooled features             1024  T ≥ 14, H, W ≥ 224 (its 2×7×7 average pool)
``mvit_v1_b``   class token after the norm    768  exactly 16 × 224 × 224 (position tables)
``mvit_v2_s``   same                          768  exactly 16 × 224 × 224 (relative position tables)
``swin3d_t``    pooled, normed features       768  any T, H, W (windows are padded); crops 224
``swin3d_s``    same                          768  same
``swin3d_b``    same                         1024  same
=============== ============================ ===== ==================================================

Expected input (attributes, read by ``fit``'s and eval's view checks, see
:func:`videossl.models.encoders.input_checks`): ``num_frames`` / ``img_size`` (``None`` unless the
model only runs at one size: MViT), ``min_frames`` / ``min_size`` (S3D), ``pretrained_size``
(the crop torchvision's Kinetics weights were evaluated at: a note, not a rule) and
``mean`` / ``std``, the normalisation of the weight enum's transforms (torchvision's
``weights.transforms()``; the clip is expected as floats in [0, 1] normalised with them).

``weights``: ``None`` (random init, torchvision's initialisation), a weight enum member name
(``"KINETICS400_V1"`` or ``"Swin3D_T_Weights.KINETICS400_V1"``), or a path. An enum name is looked
up in the torch hub cache, ``torch.hub.get_dir()/checkpoints/<file name of the enum's URL>``, where
``torch.hub.load_state_dict_from_url`` (and so torchvision's ``weights=``) stores downloads
(https://pytorch.org/docs/stable/hub.html#where-are-my-downloaded-models-saved); nothing is
downloaded, a missing file is an error naming the file and the URL to fetch. A path may be a
torchvision state dict (the head is dropped) or a videossl encoder file (``encoder.`` keys). Every
file is read by :mod:`videossl.core.checkpoint`; a load that leaves any key of the file unused or
any parameter of the encoder unset fails with the list.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision.models.video as tvv
from torch import nn
from torchvision.models import get_model_weights

from videossl.core.checkpoint import LoadReport, load_state, read_encoder_meta, read_file, read_state_dict
from videossl.errors import VideosslError

__all__ = ["TV_ARCHS", "TorchvisionVideoEncoder", "describe_input", "hub_checkpoint_path", "resolve_tv_weights"]


@dataclass(frozen=True)
class _Arch:
    head: str  # torchvision's classifier attribute (replaced by Identity; its keys are dropped on load)
    feature_dim: int
    fixed_input: tuple[int, int] | None = None  # (frames, size) the model only runs at
    minimum: tuple[int, int] | None = None  # (frames, size) the model needs at least


TV_ARCHS: dict[str, _Arch] = {
    "r3d_18": _Arch("fc", 512),
    "mc3_18": _Arch("fc", 512),
    "r2plus1d_18": _Arch("fc", 512),
    "s3d": _Arch("classifier", 1024, minimum=(14, 224)),
    "mvit_v1_b": _Arch("head", 768, fixed_input=(16, 224)),
    "mvit_v2_s": _Arch("head", 768, fixed_input=(16, 224)),
    "swin3d_t": _Arch("head", 768),
    "swin3d_s": _Arch("head", 768),
    "swin3d_b": _Arch("head", 1024),
}


def _check_arch(arch: str) -> _Arch:
    if arch not in TV_ARCHS:
        raise VideosslError(f"unknown torchvision video arch {arch!r}; valid: {', '.join(TV_ARCHS)}")
    return TV_ARCHS[arch]


def hub_checkpoint_path(url: str) -> Path:
    """Where ``torch.hub.load_state_dict_from_url(url)`` keeps its download: ``<hub dir>/checkpoints/<file>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def _weights_enum(arch: str):
    return get_model_weights(arch)


def _enum_member(arch: str, name: str):
    """The weight enum member of ``arch`` named ``name`` (``KINETICS400_V1`` or ``Swin3D_T_Weights.KINETICS400_V1``)."""
    enum = _weights_enum(arch)
    cls_name, _, member = name.rpartition(".")
    if cls_name and cls_name != enum.__name__:
        raise VideosslError(f"weights {name!r} are not {arch}'s: its weight enum is {enum.__name__} "
                            f"({', '.join(m.name for m in enum)})")
    if member == "DEFAULT":
        return enum.DEFAULT
    if member not in enum.__members__:
        return None
    return enum[member]


def resolve_tv_weights(arch: str, weights: str | os.PathLike) -> tuple[Path, str]:
    """(file, source description) of ``weights``: an existing path, or an enum name found in the hub cache."""
    path = Path(weights)
    if path.is_file():
        return path, f"file {path}"
    member = _enum_member(arch, str(weights))
    if member is None:
        enum = _weights_enum(arch)
        raise VideosslError(f"weights {str(weights)!r} for {arch} are neither a file nor a member of {enum.__name__} "
                            f"({', '.join(m.name for m in enum)})")
    file = hub_checkpoint_path(member.url)
    source = f"torchvision {type(member).__name__}.{member.name}"
    if not file.is_file():
        raise VideosslError(f"{source} is not in the torch hub cache: looked for {file}; fetch {member.url} "
                            f"to that path (the hub dir is $TORCH_HOME/hub, see torch.hub.get_dir()) "
                            f"or pass the file's path as weights")
    return file, f"{source} ({file})"


class TorchvisionVideoEncoder(nn.Module):
    """A ``torchvision.models.video`` model without its classifier (see the module docstring).

    Args:
        arch: one of :data:`TV_ARCHS` (``r3d_18``, ``mc3_18``, ``r2plus1d_18``, ``s3d``, ``mvit_v1_b``,
            ``mvit_v2_s``, ``swin3d_t``, ``swin3d_s``, ``swin3d_b``).
        weights: ``None``, a weight enum member name, or a path (torchvision state dict or encoder file).

    After loading, ``weights_source``, ``weights_conversion`` and ``load_report`` say what was loaded.
    """

    def __init__(self, arch: str = "r3d_18", weights: str | None = None) -> None:
        super().__init__()
        info = _check_arch(arch)
        self.arch = arch
        model = getattr(tvv, arch)(weights=None)
        setattr(model, info.head, nn.Identity())
        # adopt torchvision's modules so parameter names equal torchvision's (minus the head)
        for name, child in model.named_children():
            self.add_module(name, child)
        for name, p in model.named_parameters(recurse=False):
            self.register_parameter(name, p)
        for name, b in model.named_buffers(recurse=False):
            self.register_buffer(name, b)
        self._tv_forward = type(model).forward
        self.feature_dim = info.feature_dim
        self.in_channels = 3
        self.num_frames, self.img_size = info.fixed_input or (None, None)
        self.min_frames, self.min_size = info.minimum or (None, None)
        self.fixed_input = info.fixed_input is not None
        meta = _weights_enum(arch).DEFAULT
        t = meta.transforms()
        self.mean, self.std = tuple(float(x) for x in t.mean), tuple(float(x) for x in t.std)
        self.pretrained_size = int(t.crop_size[0])
        self.normalisation = f"torchvision {type(meta).__name__} transforms"
        self.weights_source: str | None = None
        self.weights_conversion: str | None = None
        self.load_report: LoadReport | None = None
        if weights is not None:
            self.load_weights(weights)

    # ------------------------------------------------------------------------------------ weights
    @property
    def head_prefix(self) -> str:
        return TV_ARCHS[self.arch].head + "."

    def resolve_weights(self, weights: str | os.PathLike) -> tuple[Path, str]:
        """(file, source) of a path or a weight enum name (see :func:`resolve_tv_weights`)."""
        return resolve_tv_weights(self.arch, weights)

    def convert_reference(self, state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
        """A torchvision state dict of this arch → ours (its classifier dropped), and the conversion's description."""
        head = self.head_prefix
        dropped = sorted(k for k in state if k.startswith(head))
        out = {k: v for k, v in state.items() if not k.startswith(head)}
        return out, (f"torchvision {self.arch} state dict, classifier dropped ({', '.join(dropped) or 'no head keys'}); "
                     "other keys unchanged")

    def load_weights(self, weights: str | os.PathLike) -> LoadReport:
        """Load a path or enum name; every key must be used and every parameter set (else the list is the error)."""
        path, source = self.resolve_weights(weights)
        obj = read_file(path)
        meta = read_encoder_meta(obj)
        if meta is not None:
            state, prefix = read_state_dict(obj), "encoder."
            conversion = str(meta.get("conversion") or "none")
            source = f"encoder file {path} (source: {meta.get('source', 'unknown')})"
        else:
            state, conversion = self.convert_reference(read_state_dict(obj))
            prefix = ""
        report = load_state(self, state, prefix=prefix, allow_missing=False, allow_unexpected=False, what=str(path),
                            hint=f"is it a torchvision {self.arch} checkpoint?")
        self.weights_source, self.weights_conversion, self.load_report = source, conversion, report
        return report

    # ------------------------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[1] != 3:
            raise VideosslError(f"tv-{self.arch} expects a float clip (B, 3, T, H, W), got shape {tuple(x.shape)}")
        t, h, w = x.shape[2:]
        if self.fixed_input and (t, h, w) != (self.num_frames, self.img_size, self.img_size):
            raise VideosslError(f"tv-{self.arch} runs only on {self.num_frames} frames at {self.img_size} x "
                                f"{self.img_size} px, got {t} x {h} x {w}")
        if self.min_frames and (t < self.min_frames or min(h, w) < self.min_size):
            raise VideosslError(f"tv-{self.arch} needs at least {self.min_frames} frames at {self.min_size} px, "
                                f"got {t} x {h} x {w}")
        return self._tv_forward(self, x)

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, feature_dim={self.feature_dim}"


def describe_input(enc: Any) -> str:
    """One line: the input ``enc`` expects (frames, size, normalisation)."""
    parts = []
    if getattr(enc, "num_frames", None) and getattr(enc, "img_size", None):
        parts.append(f"{enc.num_frames} frames at {enc.img_size} px")
    elif getattr(enc, "min_frames", None):
        parts.append(f">= {enc.min_frames} frames at >= {enc.min_size} px")
    else:
        parts.append("any clip length and size")
    if getattr(enc, "mean", None) is not None:
        parts.append(f"normalised with mean {list(enc.mean)}, std {list(enc.std)}")
    return ", ".join(parts)
