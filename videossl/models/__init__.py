"""Video encoders ((B, C, T, H, W) → (B, feature_dim)), audio encoders ((B, C, time, mel) → (B, feature_dim)),
heads and RandConv.

Build an encoder by name with :func:`build_encoder` (``r3d_18``, ``r2plus1d_18``, ``mc3_18``,
``tsm_resnet``, ``small3d``, ``vivit``, torchvision's zoo as ``tv-<arch>``; audio: ``audio-resnet50``,
``audio-small``) or by class
(``class_path`` in YAML); weights load through :func:`videossl.core.checkpoint.load_state`.
"""

from videossl.models.audio import AudioResNet, SmallAudio2D
from videossl.models.encoders import (
    ENCODERS,
    Small3D,
    TemporalShift,
    TSMResNet,
    VideoResNetEncoder,
    build_encoder,
    input_checks,
    list_encoders,
    registry_spec,
)
from videossl.models.heads import MLP, predictor, projector
from videossl.models.randconv import RandConv
from videossl.models.tv_zoo import TorchvisionVideoEncoder

__all__ = [
    "ENCODERS",
    "AudioResNet",
    "MLP",
    "RandConv",
    "Small3D",
    "SmallAudio2D",
    "TSMResNet",
    "TemporalShift",
    "TorchvisionVideoEncoder",
    "VideoResNetEncoder",
    "build_encoder",
    "input_checks",
    "list_encoders",
    "predictor",
    "projector",
    "registry_spec",
]
