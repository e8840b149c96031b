"""Video encoders, small heads, RandConv and encoder-checkpoint loading.

Every encoder takes a float clip ``(B, C, T, H, W)`` and returns ``(B, feature_dim)`` features
(the embedding *before* any projector), and exposes ``feature_dim``. Encoders are ordinary
``nn.Module`` classes with typed ``__init__`` arguments, so a recipe can name them by
``class_path`` in YAML; :func:`build_encoder` builds the same classes from a short registry name:

==============  ==============================================================================
name            class
==============  ==============================================================================
``r3d_18``      :class:`VideoResNetEncoder` (``arch="r3d_18"``), torchvision R3D-18 without fc
``r2plus1d_18`` :class:`VideoResNetEncoder` (``arch="r2plus1d_18"``)
``mc3_18``      :class:`VideoResNetEncoder` (``arch="mc3_18"``)
``tsm_resnet``  :class:`TSMResNet`, BraVe's TSM-ResNet-V2 (pre-activation), depth 50 by default
``small3d``     :class:`Small3D`, a tiny 3D CNN for CPU tests and smoke runs
==============  ==============================================================================

Weights are always initialised at random (``weights=None``); pretrained weights are loaded with
:func:`load_encoder_state`.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import os
import pickle
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from timm.layers import create_conv2d
from timm.models.resnetv2 import PreActBottleneck, ResNetStage, create_resnetv2_stem
from torch import nn
from torchvision.models.video.resnet import (
    BasicBlock,
    Conv2Plus1D,
    Conv3DNoTemporal,
    Conv3DSimple,
    VideoResNet,
)

from videossl.errors import VideosslError

log = logging.getLogger(__name__)

__all__ = [
    "ENCODERS",
    "MLP",
    "RandConv",
    "Small3D",
    "TSMResNet",
    "TemporalShift",
    "VideoResNetEncoder",
    "build_encoder",
    "list_encoders",
    "load_encoder_state",
    "predictor",
    "projector",
]


def _scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


def _check_common(width: float, in_channels: int) -> None:
    if not width > 0:
        raise VideosslError(f"encoder width multiplier must be > 0, got {width}")
    if int(in_channels) < 1:
        raise VideosslError(f"encoder in_channels must be >= 1, got {in_channels}")


def _check_clip(x: torch.Tensor, in_channels: int, name: str) -> None:
    if x.ndim != 5 or x.shape[1] != in_channels:
        raise VideosslError(
            f"{name} expects a float clip (B, C={in_channels}, T, H, W), got shape {tuple(x.shape)}; "
            "check the data pipeline's layout and the encoder's in_channels"
        )


# ---------------------------------------------------------------------------------------------
# torchvision video ResNets
# ---------------------------------------------------------------------------------------------

_VIDEO_RESNET_ARCHS: dict[str, tuple[list[type[nn.Module]], str]] = {
    "r3d_18": ([Conv3DSimple] * 4, "basic"),
    "mc3_18": ([Conv3DSimple] + [Conv3DNoTemporal] * 3, "basic"),
    "r2plus1d_18": ([Conv2Plus1D] * 4, "r2plus1d"),
}


class VideoResNetEncoder(VideoResNet):
    """torchvision's R3D-18 / MC3-18 / R(2+1)D-18 without the classifier, with a width multiplier.

    torchvision's builders fix the widths (64, 128, 256, 512) and a 3-channel stem, so this class
    builds the same network from torchvision's own blocks (``BasicBlock``, ``Conv3DSimple``,
    ``Conv3DNoTemporal``, ``Conv2Plus1D``, ``VideoResNet._make_layer`` and ``VideoResNet.forward``)
    with every width scaled by ``width`` and a stem taking ``in_channels`` (2 for flow, 1 for grey).
    With ``width=1, in_channels=3`` the parameter names and shapes equal torchvision's (minus
    ``fc``), so torchvision-format weights load with ``load_encoder_state(enc, sd, prefix="")``.

    Output: ``(B, 512·width)``; ``fc`` is ``nn.Identity``.
    """

    def __init__(
        self,
        arch: str = "r3d_18",
        width: float = 1.0,
        in_channels: int = 3,
        layers: Sequence[int] = (2, 2, 2, 2),
        zero_init_residual: bool = False,
    ) -> None:
        if arch not in _VIDEO_RESNET_ARCHS:
            raise VideosslError(f"unknown video ResNet arch {arch!r}; valid: {sorted(_VIDEO_RESNET_ARCHS)}")
        _check_common(width, in_channels)
        layers = [int(n) for n in layers]
        if len(layers) != 4 or min(layers) < 1:
            raise VideosslError(f"video ResNet layers must be 4 positive block counts, got {tuple(layers)}")
        # VideoResNet.__init__ hard-codes widths and the stem; build its attributes here instead.
        nn.Module.__init__(self)
        self.arch, self.width, self.in_channels = arch, float(width), int(in_channels)
        conv_makers, stem_kind = _VIDEO_RESNET_ARCHS[arch]
        planes = [_scaled(c, width) for c in (64, 128, 256, 512)]
        self.inplanes = planes[0]
        if stem_kind == "r2plus1d":
            mid = _scaled(45, width)
            self.stem = nn.Sequential(
                nn.Conv3d(in_channels, mid, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
                nn.BatchNorm3d(mid),
                nn.ReLU(inplace=True),
                nn.Conv3d(mid, planes[0], (3, 1, 1), stride=1, padding=(1, 0, 0), bias=False),
                nn.BatchNorm3d(planes[0]),
                nn.ReLU(inplace=True),
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv3d(in_channels, planes[0], (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
                nn.BatchNorm3d(planes[0]),
                nn.ReLU(inplace=True),
            )
        self.layer1 = self._make_layer(BasicBlock, conv_makers[0], planes[0], layers[0], stride=1)
        self.layer2 = self._make_layer(BasicBlock, conv_makers[1], planes[1], layers[1], stride=2)
        self.layer3 = self._make_layer(BasicBlock, conv_makers[2], planes[2], layers[2], stride=2)
        self.layer4 = self._make_layer(BasicBlock, conv_makers[3], planes[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool3d((1, 1, 1))
        self.fc = nn.Identity()
        self.feature_dim = planes[3]
        for m in self.modules():  # same initialisation as torchvision's VideoResNet
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.conv2[1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_clip(x, self.in_channels, self.arch)
        return super().forward(x)


# ---------------------------------------------------------------------------------------------
# TSM-ResNet (BraVe backbone)
# ---------------------------------------------------------------------------------------------


class TemporalShift(nn.Module):
    """Temporal shift on frames folded into the batch: ``(N·T, C, H, W)`` → same shape.

    Channels ``[0, f)`` move one frame forward in time (``out[t] = in[t-1]``), channels
    ``[f, 2f)`` one frame backward (``out[t] = in[t+1]``), with ``f = int(C · fraction)``;
    the vacated frames at the clip ends are zero; the other channels are unchanged.
    ``num_frames`` is set by the owning :class:`TSMResNet` before each forward.

    Deviation from deepmind/brave: their GPU shift also permutes the channel order
    (backward-shifted block first, forward-shifted block last). That permutation only matters
    when porting their checkpoints; the function computed is otherwise the same.
    """

    def __init__(self, fraction: float = 0.125) -> None:
        super().__init__()
        if not 0.0 <= fraction <= 0.5:
            raise VideosslError(f"temporal shift fraction must be in [0, 0.5], got {fraction}")
        self.fraction = float(fraction)
        self.num_frames = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.num_frames
        nt, c, h, w = x.shape
        f = int(c * self.fraction)
        if f == 0:
            return x
        if nt % t:
            raise VideosslError(f"TemporalShift: batch of {nt} frames is not a multiple of num_frames={t}")
        x5 = x.reshape(nt // t, t, c, h, w)
        out = torch.zeros_like(x5)
        out[:, 1:, :f] = x5[:, :-1, :f]
        out[:, :-1, f : 2 * f] = x5[:, 1:, f : 2 * f]
        out[:, :, 2 * f :] = x5[:, :, 2 * f :]
        return out.reshape(nt, c, h, w)


class TSMPreActBottleneck(PreActBottleneck):
    """timm's pre-activation bottleneck with a temporal shift between the shortcut and conv1.

    Order (brave.md §4): BN → ReLU → [1×1 projection shortcut on the pre-activation, first block of
    a unit] → temporal shift → 1×1 → BN-ReLU → 3×3 (stride) → BN-ReLU → 1×1; add.
    """

    def __init__(self, *args, shift_fraction: float = 0.125, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.shift = TemporalShift(shift_fraction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_preact = self.norm1(x)
        shortcut = x if self.downsample is None else self.downsample(x_preact)
        x = self.conv1(self.shift(x_preact))
        x = self.conv2(self.norm2(x))
        x = self.conv3(self.norm3(x))
        return self.drop_path(x) + shortcut


def _bn_relu(num_features: int, device=None, dtype=None) -> nn.Sequential:
    # A plain BatchNorm2d + ReLU (not timm's BatchNormAct2d): torch's
    # SyncBatchNorm.convert_sync_batchnorm (used by Lightning's sync_batchnorm=True) turns a
    # BatchNormAct2d into a plain SyncBatchNorm and silently drops its ReLU.
    return nn.Sequential(
        OrderedDict(
            bn=nn.BatchNorm2d(num_features, momentum=0.1, device=device, dtype=dtype),
            act=nn.ReLU(inplace=True),
        )
    )


_TSM_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3), 200: (3, 24, 36, 3)}


class TSMResNet(nn.Module):
    """TSM-ResNet-V2 as in BraVe (brave.md §4), built from timm ResNet-V2 pieces.

    Frames are folded into the batch and processed by 2D convolutions (no temporal striding).
    Stem: 7×7/2 conv (64·w, no bias) → 3×3/2 max-pool, no BN (pre-activation). Units of
    pre-activation bottlenecks with output channels (256, 512, 1024, 2048)·w, bottleneck width
    out/4, strides (1, 2, 2, 2) on the 3×3 conv, temporal shift (1/8 forward, 1/8 backward,
    zero-padded) in every block. Head: BN → ReLU → mean over H, W → mean over T.

    Args:
        depth: 50 (default), 101, 152 or 200; ignored when ``layers`` is given.
        layers: blocks per unit, e.g. ``(1, 1, 1, 1)`` for a tiny CPU variant.
        width: width multiplier w (also widens the stem); ``feature_dim = 2048·w``.
        in_channels: 3 for RGB, 2 for flow, 1 for grey.
        shift_fraction: channel fraction shifted each way (1/8).

    Deviations from deepmind/brave: PyTorch symmetric padding instead of TF "SAME" (differs by a
    pixel on stride-2 layers of even-sized inputs), no channel permutation in the shift, and the
    block biases/initialisation follow timm/torchvision (Kaiming fan-out convs). None changes the
    architecture; they matter only when porting DeepMind checkpoints. Under DDP convert the BNs with
    ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` (BraVe syncs BN statistics across devices).
    """

    def __init__(
        self,
        depth: int = 50,
        layers: Sequence[int] | None = None,
        width: float = 1.0,
        in_channels: int = 3,
        shift_fraction: float = 0.125,
    ) -> None:
        super().__init__()
        _check_common(width, in_channels)
        if layers is None:
            if depth not in _TSM_DEPTHS:
                raise VideosslError(
                    f"tsm_resnet depth must be one of {sorted(_TSM_DEPTHS)} (or pass layers=(...)), got {depth}"
                )
            layers = _TSM_DEPTHS[depth]
        layers = tuple(int(n) for n in layers)
        if len(layers) != 4 or min(layers) < 1:
            raise VideosslError(f"tsm_resnet layers must be 4 positive block counts, got {layers}")
        self.layers, self.width, self.in_channels = layers, float(width), int(in_channels)
        conv = functools.partial(create_conv2d, bias=False)  # symmetric padding, no bias
        stem_chs = _scaled(64, width)
        self.stem = create_resnetv2_stem(
            in_channels, stem_chs, "", preact=True, conv_layer=conv, norm_layer=_bn_relu
        )
        stages, prev = [], stem_chs
        for i, (depth_i, c) in enumerate(zip(layers, (256, 512, 1024, 2048), strict=True)):
            out = _scaled(c, width)
            stages.append(
                ResNetStage(
                    prev,
                    out,
                    stride=1 if i == 0 else 2,
                    dilation=1,
                    depth=depth_i,
                    bottle_ratio=0.25,
                    block_fn=TSMPreActBottleneck,
                    conv_layer=conv,
                    norm_layer=_bn_relu,
                    act_layer=nn.ReLU,
                    shift_fraction=shift_fraction,
                )
            )
            prev = out
        self.stages = nn.Sequential(*stages)
        self.norm = _bn_relu(prev)
        self.feature_dim = prev
        self._shifts = [m for m in self.modules() if isinstance(m, TemporalShift)]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_clip(x, self.in_channels, "tsm_resnet")
        b, c, t, h, w = x.shape
        for m in self._shifts:
            m.num_frames = t
        y = x.transpose(1, 2).reshape(b * t, c, h, w)
        y = self.norm(self.stages(self.stem(y)))
        return y.mean(dim=(2, 3)).reshape(b, t, -1).mean(dim=1)


# ---------------------------------------------------------------------------------------------
# Small 3D CNN
# ---------------------------------------------------------------------------------------------


class Small3D(nn.Module):
    """A tiny 3D CNN for CPU tests: three Conv3d-BN-ReLU (channels w, 2w, 4w), global average pool.

    ``feature_dim = 4·width`` (64 at the default width 16).
    """

    def __init__(self, width: int = 16, in_channels: int = 3) -> None:
        super().__init__()
        _check_common(width, in_channels)
        width, self.in_channels = int(width), int(in_channels)
        chans = [in_channels, width, 2 * width, 4 * width]
        strides = [(1, 2, 2), (2, 2, 2), (2, 2, 2)]
        blocks = []
        for cin, cout, s in zip(chans[:-1], chans[1:], strides, strict=True):
            blocks += [
                nn.Conv3d(cin, cout, 3, stride=s, padding=1, bias=False),
                nn.BatchNorm3d(cout),
                nn.ReLU(inplace=True),
            ]
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.feature_dim = 4 * width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_clip(x, self.in_channels, "small3d")
        return self.pool(self.features(x)).flatten(1)


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------

ENCODERS: dict[str, Callable[..., nn.Module]] = {
    "r3d_18": functools.partial(VideoResNetEncoder, arch="r3d_18"),
    "r2plus1d_18": functools.partial(VideoResNetEncoder, arch="r2plus1d_18"),
    "mc3_18": functools.partial(VideoResNetEncoder, arch="mc3_18"),
    "tsm_resnet": TSMResNet,
    "small3d": Small3D,
}


def list_encoders() -> list[str]:
    """Names accepted by :func:`build_encoder`."""
    return sorted(ENCODERS)


def build_encoder(name: str, **kwargs) -> nn.Module:
    """Build an encoder by registry name, e.g. ``build_encoder("tsm_resnet", width=2)``.

    Unknown names and arguments the encoder does not take raise :class:`VideosslError`.
    """
    if name not in ENCODERS:
        raise VideosslError(f"unknown encoder {name!r}; valid names: {', '.join(list_encoders())}")
    factory = ENCODERS[name]
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as e:
        raise VideosslError(f"bad arguments for encoder {name!r}: {e}") from None
    return factory(**kwargs)


# ---------------------------------------------------------------------------------------------
# Heads (brave.md §5)
# ---------------------------------------------------------------------------------------------


class MLP(nn.Sequential):
    """Linear → BN → ReLU → Linear [→ BN]: BraVe's projector (``final_bn=True``) / predictor.

    Input and output are ``(B, dim)``. The final BN has learned scale and offset.
    """

    def __init__(
        self, in_dim: int, hidden_dim: int = 4096, out_dim: int = 128, final_bn: bool = False
    ) -> None:
        if min(in_dim, hidden_dim, out_dim) < 1:
            raise VideosslError(f"MLP dims must be >= 1, got in={in_dim}, hidden={hidden_dim}, out={out_dim}")
        mods: list[tuple[str, nn.Module]] = [
            ("fc1", nn.Linear(in_dim, hidden_dim)),
            ("bn1", nn.BatchNorm1d(hidden_dim)),
            ("act", nn.ReLU(inplace=True)),
            ("fc2", nn.Linear(hidden_dim, out_dim)),
        ]
        if final_bn:
            mods.append(("bn2", nn.BatchNorm1d(out_dim)))
        super().__init__(OrderedDict(mods))
        self.in_dim, self.hidden_dim, self.out_dim = in_dim, hidden_dim, out_dim


def projector(in_dim: int, hidden_dim: int = 4096, out_dim: int = 128) -> MLP:
    """BraVe projector g: Linear → BN → ReLU → Linear → BN (final BN, unlike BYOL)."""
    return MLP(in_dim, hidden_dim, out_dim, final_bn=True)


def predictor(in_dim: int = 128, hidden_dim: int = 4096, out_dim: int = 128) -> MLP:
    """BraVe predictor h: Linear → BN → ReLU → Linear (no final BN)."""
    return MLP(in_dim, hidden_dim, out_dim, final_bn=False)


# ---------------------------------------------------------------------------------------------
# RandConv (brave.md §3)
# ---------------------------------------------------------------------------------------------


class RandConv(nn.Module):
    """Random convolution augmentation, one random kernel per clip (brave.md §3).

    For each clip of ``(B, C, T, H, W)`` draw k uniformly from ``kernel_sizes`` (default
    {1, 3, 5, 7, 9, 11}) and a C→C k×k kernel with TF's ``he_normal`` init (normal truncated at
    2σ, σ = sqrt(2 / (C·k²)) / 0.8796), then convolve every frame with it: stride 1, zero
    "same" padding, no bias, no re-normalisation. The module has no parameters; it is applied in
    train and eval mode alike (it is a data augmentation). Pass ``generator`` for reproducibility.
    """

    def __init__(self, kernel_sizes: Sequence[int] = (1, 3, 5, 7, 9, 11), channels: int = 3) -> None:
        super().__init__()
        ks = tuple(int(k) for k in kernel_sizes)
        if not ks or any(k < 1 or k % 2 == 0 for k in ks):
            raise VideosslError(
                f"RandConv kernel_sizes must be odd positive integers, got {tuple(kernel_sizes)}"
            )
        self.kernel_sizes, self.channels = ks, int(channels)

    def sample_kernels(self, batch: int, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """One ``(C, C, k, k)`` kernel per clip, on the CPU."""
        idx = torch.randint(len(self.kernel_sizes), (batch,), generator=generator).tolist()
        kernels = []
        c = self.channels
        for i in idx:
            k = self.kernel_sizes[i]
            std = math.sqrt(2.0 / (c * k * k)) / 0.87962566103423978
            w = torch.empty(c, c, k, k)
            nn.init.trunc_normal_(w, 0.0, std, -2 * std, 2 * std, generator=generator)
            kernels.append(w)
        return kernels

    def forward(
        self,
        x: torch.Tensor,
        generator: torch.Generator | None = None,
        kernels: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        _check_clip(x, self.channels, "RandConv")
        b, c, t, h, w = x.shape
        if kernels is None:
            kernels = self.sample_kernels(b, generator)
        out = torch.empty_like(x)
        by_k: dict[int, list[int]] = {}
        for i, kern in enumerate(kernels):
            by_k.setdefault(kern.shape[-1], []).append(i)
        for k, rows in by_k.items():
            # clips sharing k: one grouped Conv3d with (1, k, k) kernels, group = clip
            weight = torch.cat([kernels[i] for i in rows]).to(x.device, x.dtype).unsqueeze(2)
            xs = x[rows].reshape(1, len(rows) * c, t, h, w)
            ys = F.conv3d(xs, weight, padding=(0, k // 2, k // 2), groups=len(rows))
            out[rows] = ys.reshape(len(rows), c, t, h, w)
        return out


# ---------------------------------------------------------------------------------------------
# Checkpoint loading
# ---------------------------------------------------------------------------------------------


def _top_prefixes(keys) -> list[str]:
    return sorted({k.split(".", 1)[0] + "." if "." in k else k for k in keys})


def load_encoder_state(
    encoder: nn.Module,
    state_dict_or_path: Mapping[str, torch.Tensor] | str | os.PathLike,
    prefix: str = "encoder.",
    key_map: Mapping[str, str] | Callable[[str], str | None] | None = None,
) -> tuple[list[str], list[str]]:
    """Load an encoder's weights from a state dict, a Lightning checkpoint or a file.

    * a path is read with ``torch.load(..., map_location="cpu", weights_only=True)``: a file
      holding arbitrary pickled objects is refused;
    * a dict with a ``"state_dict"`` entry (Lightning checkpoint) uses that entry;
    * keys starting with ``prefix`` are kept with the prefix stripped (``prefix=""`` keeps all);
    * ``key_map`` then renames keys: a callable ``key -> new key`` (``None`` drops the key) or a
      dict of *prefix* renames (the longest matching prefix wins);
    * the result is loaded with ``strict=False``; missing / unexpected keys are returned as
      ``(missing, unexpected)`` and reported with ``warnings.warn``.

    Raises :class:`VideosslError` when no key starts with ``prefix`` (naming the prefixes found),
    when nothing that remains matches the encoder, or on shape mismatches.
    """
    source = "state dict"
    if isinstance(state_dict_or_path, (str, os.PathLike)):
        path = os.fspath(state_dict_or_path)
        source = path
        if not os.path.isfile(path):
            raise VideosslError(f"checkpoint not found: {path}")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise VideosslError(
                f"refusing to load {path}: it contains pickled objects that weights_only=True does not allow "
                f"({first}); re-save only tensors, e.g. torch.save(model.state_dict(), path)"
            ) from None
    else:
        obj = state_dict_or_path
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise VideosslError(f"{source} is not a state dict (got {type(obj).__name__})")
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}

    picked = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    if not picked:
        raise VideosslError(
            f"no key in {source} starts with prefix {prefix!r}; prefixes found: {', '.join(_top_prefixes(sd)) or 'none'}"
        )
    if key_map is not None:
        picked = _apply_key_map(picked, key_map)

    own = encoder.state_dict()
    if not any(k in own for k in picked):
        raise VideosslError(
            f"no key of {source} (after prefix {prefix!r}) matches the encoder "
            f"{type(encoder).__name__}: checkpoint has e.g. {sorted(picked)[:3]}, encoder has e.g. {list(own)[:3]}; "
            "check prefix/key_map and the encoder config"
        )
    bad = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in picked.items()
        if k in own and v.shape != own[k].shape
    ]
    if bad:
        raise VideosslError(
            f"{len(bad)} tensor(s) in {source} do not fit the encoder (checkpoint vs encoder shape): "
            f"{'; '.join(bad[:3])}; check width/in_channels/arch"
        )
    result = encoder.load_state_dict(picked, strict=False)
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:
        msg = (
            f"load_encoder_state({type(encoder).__name__}): {len(missing)} missing key(s) {missing[:5]}, "
            f"{len(unexpected)} unexpected key(s) {unexpected[:5]}"
        )
        warnings.warn(msg, stacklevel=2)
        log.warning(msg)
    return missing, unexpected


def _apply_key_map(sd: dict[str, torch.Tensor], key_map) -> dict[str, torch.Tensor]:
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
                k = new + k[len(old) :]
                break
        out[k] = v
    return out
