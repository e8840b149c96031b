"""Video encoders ((B, C, T, H, W) → (B, feature_dim)), BraVe heads, RandConv and weight loading.

Build an encoder by name with :func:`build_encoder` (``r3d_18``, ``r2plus1d_18``, ``mc3_18``,
``tsm_resnet``, ``small3d``) or by class (``class_path`` in YAML); load weights with
:func:`load_encoder_state`.
"""

from videossl.models.encoders import (
    ENCODERS,
    MLP,
    RandConv,
    Small3D,
    TemporalShift,
    TSMResNet,
    VideoResNetEncoder,
    build_encoder,
    list_encoders,
    load_encoder_state,
    predictor,
    projector,
)

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
