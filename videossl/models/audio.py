"""Audio encoders: a log-mel spectrogram ``(B, C, time, mel)`` → ``(B, feature_dim)``.

The spectrogram is treated as an image (time × mel, C = 1 mono or 2 stereo), as in BraVe's audio broad
view (Recasens et al., arXiv:2103.16559 §4; deepmind/brave ``models/brave/resnet.py``, fed a
``T × 80 × 1`` log-mel image). Every encoder accepts any number of time frames (global mean pooling).

=================  ===========================================================================
registry name      class
=================  ===========================================================================
``audio-resnet50`` :class:`AudioResNet`, the 2-D ResNet-V2-50 of BraVe's V/A views (2048·w features)
``audio-small``    :class:`SmallAudio2D`, a tiny 2-D CNN for CPU tests and smoke runs
=================  ===========================================================================
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from videossl.errors import VideosslError
from videossl.models.preact import check_width_channels, init_conv_bn, preact_resnet_v2, resolve_layers

__all__ = ["AudioResNet", "SmallAudio2D", "check_spectrogram", "subtract_time_mean"]


def subtract_time_mean(x: torch.Tensor) -> torch.Tensor:
    """The spectrogram minus each (channel, mel band)'s mean over the clip's time frames.

    Cepstral mean normalisation on the log-mel image (as in speech front ends; Viikki & Laurila 1998): on a
    log scale a fixed gain, a channel's level or a stationary spectral envelope (a sound's *timbre*) is close
    to a per-band constant, which this removes, while what changes over the clip (a pitch that glides, a pan
    that moves, loudness that swells) stays. A deviation from BraVe (arXiv:2103.16559 §3 feeds
    ``log(1 + 10000·mel)`` as is), off by default: on small sets an encoder otherwise tells the training
    clips apart by their timbre and memorises them (BENCHMARKS.md, "Sessions 15–16: BraVe V/A — the audio
    side learns, the video side does not").
    """
    return x - x.mean(dim=2, keepdim=True)


def check_spectrogram(x: torch.Tensor, in_channels: int, name: str) -> None:
    if x.ndim != 4 or x.shape[1] != in_channels:
        raise VideosslError(
            f"{name} expects a float spectrogram (B, C={in_channels}, time, mel), got shape {tuple(x.shape)}; "
            "check data.audio's channels (1 mono, 2 stereo) against the encoder's in_channels"
        )


class AudioResNet(nn.Module):
    """BraVe's audio backbone: a 2-D ResNet-V2 (pre-activation bottlenecks) on the spectrogram image.

    Architecture as deepmind/brave's ``ResNetV2`` (arXiv:2103.16559 §4): 7×7/2 conv (64·w, no bias) →
    3×3/2 max-pool → units of pre-activation bottlenecks (BN → ReLU → [1×1 projection shortcut on the
    first block of a unit] → 1×1 → BN-ReLU → 3×3 (stride) → BN-ReLU → 1×1; add) with output channels
    (256, 512, 1024, 2048)·w and strides (1, 2, 2, 2) → final BN → ReLU → mean over time and mel.
    It is :class:`~videossl.models.encoders.TSMResNet` without the temporal shift, on one image per clip.

    Args:
        depth: 50 (default; BraVe's), 101, 152 or 200; ignored when ``layers`` is given.
        layers: blocks per unit, e.g. ``(1, 1, 1, 1)`` for a tiny variant.
        width: width multiplier w (also widens the stem); ``feature_dim = 2048·w``.
        in_channels: spectrogram channels, 1 (mono; BraVe) or 2 (stereo).
        subtract_time_mean: feed :func:`subtract_time_mean` of the input (off: BraVe's input as is).

    Input ``(B, C, time, mel)`` float; output ``(B, feature_dim)``. Deviations from deepmind/brave: the
    same as TSMResNet's (symmetric padding instead of TF "SAME", Kaiming fan-out init).
    """

    def __init__(self, depth: int = 50, layers: Sequence[int] | None = None, width: float = 1.0,
                 in_channels: int = 1, subtract_time_mean: bool = False) -> None:
        super().__init__()
        check_width_channels(width, in_channels)
        layers = resolve_layers(depth, layers, "AudioResNet")
        self.subtract_time_mean = bool(subtract_time_mean)
        self.layers, self.width, self.in_channels = layers, float(width), int(in_channels)
        self.stem, self.stages, self.norm, self.feature_dim = preact_resnet_v2(in_channels, layers, width)
        init_conv_bn(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The final pre-activated map before pooling: (B, C, time/32, mel/32) (rounded up)."""
        check_spectrogram(x, self.in_channels, "AudioResNet")
        if self.subtract_time_mean:
            x = subtract_time_mean(x)
        return self.norm(self.stages(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x).mean(dim=(2, 3))


class SmallAudio2D(nn.Module):
    """A tiny 2-D CNN on the spectrogram for CPU runs: ``stages`` Conv2d(3×3, stride 2)-BN-ReLU (channels
    w, 2w, 4w, then 4w), global mean pooling; the audio twin of :class:`~videossl.models.encoders.Small3D`.

    ``feature_dim = 4·width`` (64 at the default width 16; fewer than 3 stages: ``2^(stages−1)·width``).
    The receptive field is ``2^(stages+1) − 1`` spectrogram frames (3 stages: 15 frames = 0.15 s at hop 10 ms;
    5 stages: 63 = 0.63 s): sound whose meaning is a change over time (a pitch that rises, a pan that moves)
    needs a field that spans the change, since the mean pooling keeps no order. ``subtract_time_mean``: feed
    :func:`subtract_time_mean` of the input (the clip's per-band mean removed; off by default).
    """

    def __init__(self, width: int = 16, in_channels: int = 1, stages: int = 3, subtract_time_mean: bool = False) -> None:
        super().__init__()
        self.subtract_time_mean = bool(subtract_time_mean)
        check_width_channels(width, in_channels)
        if isinstance(stages, bool) or not isinstance(stages, int) or stages < 1:
            raise VideosslError(f"SmallAudio2D stages must be an integer >= 1, got {stages!r}")
        width, self.in_channels, self.stages = int(width), int(in_channels), stages
        chans = [self.in_channels] + [min(2**i, 4) * width for i in range(stages)]
        blocks: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:], strict=True):
            blocks += [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*blocks)
        self.feature_dim = chans[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_spectrogram(x, self.in_channels, "SmallAudio2D")
        if self.subtract_time_mean:
            x = subtract_time_mean(x)
        return self.features(x).mean(dim=(2, 3))
