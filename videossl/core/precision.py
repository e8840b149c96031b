"""TF32 for fp32 matmuls and convolutions on CUDA: the recipe key ``tf32`` (a no-op without CUDA).

TF32 keeps fp32's range with a 10-bit mantissa on Ampere and later GPUs (several times the fp32
matmul rate). Under ``bf16-mixed`` it still speeds up what autocast leaves in fp32. Torch's own
default is TF32 for cuDNN convolutions and full fp32 for matmuls; ``tf32: true`` turns both on,
``tf32: false`` leaves torch's default alone. Only the legacy-style calls are used (never the new
``fp32_precision`` attributes): torch refuses to read a precision set through both, and Lightning
reads it with :func:`torch.get_float32_matmul_precision`.
"""

from __future__ import annotations

import torch


def tf32_state() -> dict[str, bool]:
    return {"matmul": torch.get_float32_matmul_precision() != "highest", "cudnn": bool(torch.backends.cudnn.allow_tf32)}


def set_tf32(enabled: bool, force: bool = False) -> str:
    """TF32 on (``enabled``) or off for CUDA matmuls and cuDNN convolutions; returns what was done.

    Without a CUDA device nothing is changed (CPU matmuls keep full precision) unless ``force``.
    """
    if not (torch.cuda.is_available() or force):
        return "no-op (no CUDA device)"
    torch.set_float32_matmul_precision("high" if enabled else "highest")
    torch.backends.cudnn.allow_tf32 = bool(enabled)
    return f"TF32 {'on' if enabled else 'off'} for CUDA matmuls and cuDNN convolutions"
