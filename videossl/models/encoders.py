"""Video encoders and their registry (the audio encoders of ``videossl.models.audio`` too).

Every video encoder takes a float clip ``(B, C, T, H, W)`` and returns ``(B, feature_dim)`` features
(the embedding *before* any projector), and exposes ``feature_dim``; an audio encoder takes a
spectrogram ``(B, C, time, mel)`` instead. Encoders are ordinary
``nn.Module`` classes with typed ``__init__`` arguments, so a recipe can name them by
``class_path`` in YAML; :func:`build_encoder` builds the same classes from a short registry name:

==================  ==============================================================================
name                class
==================  ==============================================================================
``r3d_18``          :class:`VideoResNetEncoder` (``arch="r3d_18"``), torchvision R3D-18 without fc
``r2plus1d_18``     :class:`VideoResNetEncoder` (``arch="r2plus1d_18"``)
``mc3_18``          :class:`VideoResNetEncoder` (``arch="mc3_18"``)
``tsm_resnet``      :class:`TSMResNet`, BraVe's TSM-ResNet-V2 (pre-activation), depth 50 by default
``small3d``         :class:`Small3D`, a tiny 3D CNN for CPU tests and smoke runs
``audio-resnet50``  :class:`~videossl.models.audio.AudioResNet`, BraVe's 2-D ResNet-V2-50 on spectrograms
``audio-small``     :class:`~videossl.models.audio.SmallAudio2D`, a tiny 2-D spectrogram CNN (CPU)
==================  ==============================================================================

Weights are always initialised at random (``weights=None``); pretrained weights are loaded with
:func:`videossl.core.checkpoint.load_state`.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from timm.models.resnetv2 import PreActBottleneck
from torch import nn
from torchvision.models.video.resnet import (
    BasicBlock,
    Conv2Plus1D,
    Conv3DNoTemporal,
    Conv3DSimple,
    VideoResNet,
)

from videossl.errors import VideosslError
from videossl.models.audio import AudioResNet, SmallAudio2D
from videossl.models.preact import check_width_channels as _check_common
from videossl.models.preact import init_conv_bn, preact_resnet_v2, resolve_layers
from videossl.models.preact import scaled as _scaled
from videossl.models.tv_zoo import TV_ARCHS, TorchvisionVideoEncoder
from videossl.models.vivit import ViViT

log = logging.getLogger(__name__)

__all__ = [
    "ENCODERS",
    "InputCheck",
    "Small3D",
    "TSMResNet",
    "TemporalShift",
    "VideoResNetEncoder",
    "build_encoder",
    "input_checks",
    "list_encoders",
    "registry_spec",
]


def check_clip(x: torch.Tensor, in_channels: int, name: str) -> None:
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
    ``fc``), so torchvision-format weights load with ``videossl.core.checkpoint.load_state(enc, sd)``.

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
        check_clip(x, self.in_channels, self.arch)
        return super().forward(x)

    # dense features for correspondence probes: stem /2 in space, layer2-4 /2 in time and space
    feature_stride = (8, 16)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's map before pooling: (B, C, T', H', W'), ``feature_stride`` = (time, space) = (8, 16)."""
        check_clip(x, self.in_channels, self.arch)
        return self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))


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

    Order (arXiv:2103.16559): BN → ReLU → [1×1 projection shortcut on the pre-activation, first block of
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


class TSMResNet(nn.Module):
    """TSM-ResNet-V2 as in BraVe (arXiv:2103.16559), built from timm ResNet-V2 pieces.

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
        layers = resolve_layers(depth, layers, "tsm_resnet")
        self.layers, self.width, self.in_channels = layers, float(width), int(in_channels)
        self.stem, self.stages, self.norm, self.feature_dim = preact_resnet_v2(
            in_channels, layers, width, block_fn=TSMPreActBottleneck, shift_fraction=shift_fraction
        )
        self._shifts = [m for m in self.modules() if isinstance(m, TemporalShift)]
        init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_clip(x, self.in_channels, "tsm_resnet")
        b, c, t, h, w = x.shape
        for m in self._shifts:
            m.num_frames = t
        y = x.transpose(1, 2).reshape(b * t, c, h, w)
        y = self.norm(self.stages(self.stem(y)))
        return y.mean(dim=(2, 3)).reshape(b, t, -1).mean(dim=1)

    # dense features for correspondence probes: per frame (no temporal stride), stem /4, units /1, /2, /2, /2
    feature_stride = (1, 32)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The final pre-activated map before pooling, per frame: (B, C, T, H/32, W/32)."""
        check_clip(x, self.in_channels, "tsm_resnet")
        b, c, t, h, w = x.shape
        for m in self._shifts:
            m.num_frames = t
        y = self.norm(self.stages(self.stem(x.transpose(1, 2).reshape(b * t, c, h, w))))
        return y.reshape(b, t, *y.shape[1:]).transpose(1, 2)


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
        check_clip(x, self.in_channels, "small3d")
        return self.pool(self.features(x)).flatten(1)

    # dense features for correspondence probes: conv strides (1,2,2), (2,2,2), (2,2,2)
    feature_stride = (4, 8)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last conv block's map before pooling: (B, 4·width, T/4, H/8, W/8)."""
        check_clip(x, self.in_channels, "small3d")
        return self.features(x)


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------

ENCODERS: dict[str, Callable[..., nn.Module]] = {
    "r3d_18": functools.partial(VideoResNetEncoder, arch="r3d_18"),
    "r2plus1d_18": functools.partial(VideoResNetEncoder, arch="r2plus1d_18"),
    "mc3_18": functools.partial(VideoResNetEncoder, arch="mc3_18"),
    "tsm_resnet": TSMResNet,
    "small3d": Small3D,
    "vivit": ViViT,
    "audio-resnet50": functools.partial(AudioResNet, depth=50),
    "audio-small": SmallAudio2D,
    **{f"tv-{arch}": functools.partial(TorchvisionVideoEncoder, arch=arch) for arch in TV_ARCHS},
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


def registry_spec(name: str, **kwargs) -> dict:
    """``{class_path, init_args}`` of a registry name (and extra init args), e.g. for ``eval --encoder tv-swin3d_t``."""
    if name not in ENCODERS:
        raise VideosslError(f"unknown encoder {name!r}; valid names: {', '.join(list_encoders())}")
    factory = ENCODERS[name]
    cls, init = (factory.func, dict(factory.keywords)) if isinstance(factory, functools.partial) else (factory, {})
    try:
        inspect.signature(cls).bind(**{**init, **kwargs})
    except TypeError as e:
        raise VideosslError(f"bad arguments for encoder {name!r}: {e}") from None
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": {**init, **kwargs}}


# ---------------------------------------------------------------------------------------------
# What an encoder expects of its input
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputCheck:
    """One finding of :func:`input_checks`: ``error`` (the encoder cannot run it), ``mismatch`` (it runs, but
    not at the size it is built for: ``fit`` refuses it) or ``note`` (normalisation / pretraining size)."""

    level: str
    message: str


def _close(a, b) -> bool:
    return a is not None and b is not None and len(a) == len(b) and all(abs(x - y) < 1e-3 for x, y in zip(a, b, strict=True))


def input_checks(encoder: nn.Module, frames: int, size: int, mean=None, std=None, what: str = "the view"
                 ) -> list[InputCheck]:
    """Compare a view (``frames`` at ``size`` px, normalised with ``mean``/``std`` or None for [0, 1]) with
    what ``encoder`` declares. Encoders that declare nothing (most CNNs) pass."""
    out: list[InputCheck] = []
    name = f"tv-{encoder.arch}" if isinstance(encoder, TorchvisionVideoEncoder) else type(encoder).__name__
    n, s = getattr(encoder, "num_frames", None), getattr(encoder, "img_size", None)
    if n is not None and s is not None:
        s2 = tuple(s) if isinstance(s, tuple | list) else (int(s), int(s))
        if (frames, (size, size)) != (n, s2):
            level = "error" if getattr(encoder, "fixed_input", False) else "mismatch"
            out.append(InputCheck(level, f"{what} is {frames} frames at {size} px but {name} is built for "
                                         f"num_frames={n}, img_size={s2[0]}"))
    lo_t, lo_s = getattr(encoder, "min_frames", None), getattr(encoder, "min_size", None)
    if lo_t is not None and (frames < lo_t or size < (lo_s or 0)):
        out.append(InputCheck("error", f"{what} is {frames} frames at {size} px but {name} needs at least "
                                       f"{lo_t} frames at {lo_s} px"))
    want_mean, want_std = getattr(encoder, "mean", None), getattr(encoder, "std", None)
    if want_mean is not None and not (_close(mean, want_mean) and _close(std, want_std)):
        given = ("[0, 1] frames (no augment mean/std)" if mean is None
                 else f"frames normalised with mean {list(mean)}, std {list(std)}")
        src = getattr(encoder, "normalisation", "the encoder's pretraining")
        out.append(InputCheck("note", f"{what} gives {given} but {name} expects mean {list(want_mean)}, std "
                                      f"{list(want_std)} ({src}): set augment: {{mean: {list(want_mean)}, std: "
                                      f"{list(want_std)}}} on the view"))
    crop = getattr(encoder, "pretrained_size", None)
    if crop is not None and crop != size and getattr(encoder, "weights_source", None):
        out.append(InputCheck("note", f"{what} is {size} px; {name}'s pretrained weights were evaluated at {crop} px crops"))
    return out
