"""Pieces shared by the pre-activation ResNet-V2 encoders (He et al., arXiv:1603.05027): BraVe's TSM-ResNet
for video and its 2-D ResNet for audio spectrograms (Recasens et al., arXiv:2103.16559 §4), both built from
timm's ResNet-V2 parts, plus the width / channel checks every CNN encoder here shares.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Sequence

from timm.layers import create_conv2d
from timm.models.resnetv2 import PreActBottleneck, ResNetStage, create_resnetv2_stem
from torch import nn

from videossl.errors import VideosslError

__all__ = ["RESNET_V2_DEPTHS", "bn_relu", "check_width_channels", "init_conv_bn", "preact_resnet_v2", "resolve_layers",
           "scaled"]

#: blocks per unit of the bottleneck ResNet-V2 depths (as in deepmind/brave's resnet.py and tsm_resnet.py)
RESNET_V2_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3), 200: (3, 24, 36, 3)}


def scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


def check_width_channels(width: float, in_channels: int) -> None:
    if not width > 0:
        raise VideosslError(f"encoder width multiplier must be > 0, got {width}")
    if int(in_channels) < 1:
        raise VideosslError(f"encoder in_channels must be >= 1, got {in_channels}")


def bn_relu(num_features: int, device=None, dtype=None) -> nn.Sequential:
    """A plain BatchNorm2d + ReLU (not timm's BatchNormAct2d): torch's
    ``SyncBatchNorm.convert_sync_batchnorm`` (used by Lightning's ``sync_batchnorm=True``) turns a
    BatchNormAct2d into a plain SyncBatchNorm and silently drops its ReLU."""
    return nn.Sequential(
        OrderedDict(
            bn=nn.BatchNorm2d(num_features, momentum=0.1, device=device, dtype=dtype),
            act=nn.ReLU(inplace=True),
        )
    )


def resolve_layers(depth: int, layers: Sequence[int] | None, name: str) -> tuple[int, ...]:
    """Blocks per unit: ``layers`` when given, else those of ``depth`` (:data:`RESNET_V2_DEPTHS`)."""
    if layers is None:
        if depth not in RESNET_V2_DEPTHS:
            raise VideosslError(
                f"{name} depth must be one of {sorted(RESNET_V2_DEPTHS)} (or pass layers=(...)), got {depth}"
            )
        layers = RESNET_V2_DEPTHS[depth]
    layers = tuple(int(n) for n in layers)
    if len(layers) != 4 or min(layers) < 1:
        raise VideosslError(f"{name} layers must be 4 positive block counts, got {layers}")
    return layers


def preact_resnet_v2(in_channels: int, layers: Sequence[int], width: float,
                     block_fn: type[nn.Module] = PreActBottleneck, **block_kwargs
                     ) -> tuple[nn.Module, nn.Sequential, nn.Sequential, int]:
    """The ResNet-V2 trunk: (stem, stages, final BN-ReLU, output channels).

    Stem: 7×7/2 conv (64·w, no bias) → 3×3/2 max-pool, no BN (pre-activation). Units of pre-activation
    bottlenecks with output channels (256, 512, 1024, 2048)·w, bottleneck width out/4, strides
    (1, 2, 2, 2) on the 3×3 conv, a 1×1 projection shortcut on the first block of each unit (applied to
    the pre-activation). ``block_fn`` / ``block_kwargs``: the block (e.g. one with a temporal shift).
    Built in that order (stem, units, final norm), so the parameter initialisation order is fixed.
    """
    conv = functools.partial(create_conv2d, bias=False)  # symmetric padding, no bias
    stem_chs = scaled(64, width)
    stem = create_resnetv2_stem(in_channels, stem_chs, "", preact=True, conv_layer=conv, norm_layer=bn_relu)
    stages, prev = [], stem_chs
    for i, (depth_i, c) in enumerate(zip(layers, (256, 512, 1024, 2048), strict=True)):
        out = scaled(c, width)
        stages.append(
            ResNetStage(
                prev,
                out,
                stride=1 if i == 0 else 2,
                dilation=1,
                depth=depth_i,
                bottle_ratio=0.25,
                block_fn=block_fn,
                conv_layer=conv,
                norm_layer=bn_relu,
                act_layer=nn.ReLU,
                **block_kwargs,
            )
        )
        prev = out
    return stem, nn.Sequential(*stages), bn_relu(prev), prev


def init_conv_bn(module: nn.Module) -> None:
    """Kaiming-normal (fan-out) 2-D convs, BN scale 1 and offset 0 (as torchvision's ResNets)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
