"""Optical flow estimated from the frames: no ground truth needed (BraVe's V/F on real video).

:func:`estimate_flow` turns a clip ``(B, 3, T, H, W)``, floats in [0, 1], into the flow between its
consecutive frames, ``(B, T-1, H, W, 2)`` in pixels, channel order **(dx, dy)**, x to the right and
y down: ``flow[b, t, y, x]`` is where the point seen at pixel (x, y) of frame t moves to in frame
t+1, minus (x, y). That is the convention of the synthetic set's ground-truth ``forward`` flow
(:mod:`videossl.data.shards.synthetic`), so BraVe's ``flow_view`` resizes and scales either alike.

Estimators (:data:`FLOW_ESTIMATORS`, name → ``(first, second, **opts) -> flow``, frames
``(N, 3, H, W)`` → ``(N, H, W, 2)``):

``farneback`` (the default)
    OpenCV's dense polynomial-expansion flow (Farnebäck, "Two-frame motion estimation based on
    polynomial expansion", SCIA 2003; ``cv2.calcOpticalFlowFarneback``) on the luma of consecutive
    frames, on the CPU, one pair at a time. The default because it needs no weights, no GPU and no
    download, and costs about as much as decoding the clip (``tools/flow_estimate_epe.py`` measures
    both). Options: ``levels`` (pyramid levels; ``None``: as many as keep the coarsest level at least
    ``min_level_size`` = 8 px, i.e. 3 levels at 32 px, 4 at 64 px, 5 at 128 px: more levels on a
    small frame only blur it to nothing), ``pyr_scale`` 0.5, ``winsize`` 9 (OpenCV's examples use 15
    on VGA frames; 9 keeps the averaging window a fraction of a 32-64 px frame), ``iterations`` 3,
    ``poly_n`` 5, ``poly_sigma`` 1.1, ``gaussian`` False (``OPTFLOW_FARNEBACK_GAUSSIAN``).
``dis``
    OpenCV's Dense Inverse Search (Kroeger et al., "Fast optical flow using dense inverse search",
    ECCV 2016, arXiv:1603.03590; ``cv2.DISOpticalFlow``), CPU, faster than Farnebäck at large sizes.
    Options: ``preset`` ``ultrafast`` | ``fast`` | ``medium`` (default), ``patch_size`` 8
    (OpenCV's default; DIS needs frames of a few patches, so it is weak at 32 px).
``raft``
    torchvision's RAFT (Teed & Deng, "RAFT: Recurrent All-Pairs Field Transforms for Optical Flow",
    ECCV 2020, arXiv:2003.12039; ``torchvision.models.optical_flow.raft_small`` / ``raft_large``) on
    the clip's device: accurate, meant for a GPU, needs weights. Options: ``arch`` ``raft_small``
    (default) | ``raft_large``; ``weights`` a torchvision weight enum member name (``DEFAULT``,
    ``C_T_V2``, ``Raft_Large_Weights.C_T_SKHT_V2``, ...) looked up in the torch hub cache (nothing is
    downloaded: a missing file is one :class:`VideosslError` naming the file and the URL, the
    resolver of :mod:`videossl.models.tv_zoo`), a path to a torchvision state dict, or ``random``
    (random initialisation, for tests only: its flow means nothing); ``num_flow_updates`` 12 (RAFT's
    recurrent refinements); ``min_size`` 128 and ``batch`` 32 (pairs per forward). RAFT needs H and W
    divisible by 8 and, with its 4-level correlation pyramid over 1/8-resolution features, at least
    128 px: smaller frames are upscaled (bilinear) so that the short side is ``min_size``, both sides
    are rounded up to a multiple of 8, and the flow is resized back with its vectors rescaled.
    Frames go in as torchvision's RAFT transforms expect: [0, 1] mapped to [-1, 1]. A built model is
    kept per (arch, weights, device) in a small module cache, outside any ``nn.Module``: it adds no
    key to a method's checkpoint.

TV-L1 (Zach et al., 2007) is not here: OpenCV ships it only in the contrib build
(``cv2.optflow.DualTVL1OpticalFlow``), which ``opencv-python-headless`` does not include.

Every estimator runs without gradients; what it returns is a constant input.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from videossl.errors import VideosslError
from videossl.models.motion import GRAY_WEIGHTS

__all__ = ["FLOW_ESTIMATORS", "check_estimator", "estimate_flow", "farneback_levels", "resize_flow"]

#: values outside [−RANGE_SLACK, 1 + RANGE_SLACK] mean the clip is not in [0, 1] (e.g. mean/std-normalised)
RANGE_SLACK = 1e-3


# ------------------------------------------------------------------------------------ helpers
def resize_flow(flow: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Flow ``(N, H, W, 2)`` px → ``(N, height, width, 2)`` px: bilinearly resampled, vectors rescaled
    with the image (dx by width / W, dy by height / H)."""
    n, h, w, _ = flow.shape
    if (h, w) == (height, width):
        return flow
    f = F.interpolate(flow.permute(0, 3, 1, 2).float(), size=(height, width), mode="bilinear", align_corners=False)
    f = f * f.new_tensor([width / w, height / h]).view(1, 2, 1, 1)
    return f.permute(0, 2, 3, 1).contiguous()


def _gray_uint8(frames: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) float in [0, 1] → (N, H, W) uint8 luma (BT.601 weights), on the CPU."""
    w = frames.new_tensor(GRAY_WEIGHTS).view(1, 3, 1, 1)
    y = (frames.float() * w).sum(1).clamp_(0, 1).mul_(255).round_()
    return y.to(torch.uint8).cpu().numpy()


def _cv2():
    try:
        import cv2
    except ImportError as e:  # a core dependency; a broken install is the only way here
        raise VideosslError("the OpenCV flow estimators need opencv-python-headless: pip install opencv-python-headless") from e
    return cv2


def _opencv_pairs(first: torch.Tensor, second: torch.Tensor, one: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> torch.Tensor:
    a, b = _gray_uint8(first), _gray_uint8(second)
    out = np.stack([one(a[i], b[i]) for i in range(a.shape[0])])
    return torch.from_numpy(out.astype(np.float32, copy=False)).to(first.device)


# ------------------------------------------------------------------------------------ estimators
def farneback_levels(height: int, width: int, pyr_scale: float = 0.5, min_level_size: int = 8) -> int:
    """Pyramid levels (OpenCV's ``levels``, the image itself included: 1 = no pyramid) keeping the coarsest
    level at least ``min_level_size`` px on the short side."""
    short = min(height, width)
    if short <= min_level_size:
        return 1
    return 1 + int(math.floor(math.log(short / min_level_size) / math.log(1 / pyr_scale) + 1e-9))


def farneback(first: torch.Tensor, second: torch.Tensor, *, levels: int | None = None, pyr_scale: float = 0.5,
              winsize: int = 9, iterations: int = 3, poly_n: int = 5, poly_sigma: float = 1.1, gaussian: bool = False,
              min_level_size: int = 8) -> torch.Tensor:
    """Farnebäck flow of each pair (see the module docstring); (N, 3, H, W) ×2 → (N, H, W, 2) px (dx, dy)."""
    cv2 = _cv2()
    h, w = first.shape[-2:]
    lv = farneback_levels(h, w, pyr_scale, min_level_size) if levels is None else int(levels)
    flags = cv2.OPTFLOW_FARNEBACK_GAUSSIAN if gaussian else 0
    return _opencv_pairs(first, second, lambda a, b: cv2.calcOpticalFlowFarneback(
        a, b, None, pyr_scale, lv, winsize, iterations, poly_n, poly_sigma, flags))


_DIS_PRESETS = {"ultrafast": "DISOPTICAL_FLOW_PRESET_ULTRAFAST", "fast": "DISOPTICAL_FLOW_PRESET_FAST",
                "medium": "DISOPTICAL_FLOW_PRESET_MEDIUM"}


def dis(first: torch.Tensor, second: torch.Tensor, *, preset: str = "medium", patch_size: int = 8) -> torch.Tensor:
    """DIS flow of each pair (see the module docstring); (N, 3, H, W) ×2 → (N, H, W, 2) px (dx, dy)."""
    cv2 = _cv2()
    if preset not in _DIS_PRESETS:
        raise VideosslError(f"dis: unknown preset {preset!r}; choose one of {', '.join(_DIS_PRESETS)}")
    est = cv2.DISOpticalFlow_create(getattr(cv2, _DIS_PRESETS[preset]))
    est.setPatchSize(int(patch_size))
    est.setPatchStride(max(1, int(patch_size) // 2))
    return _opencv_pairs(first, second, lambda a, b: est.calc(a, b, None))


RAFT_ARCHS = ("raft_small", "raft_large")


@functools.lru_cache(maxsize=4)
def _raft_model(arch: str, weights: str, device: str) -> torch.nn.Module:
    """RAFT ``arch`` with ``weights`` (enum name / path / ``random``) on ``device``, in eval mode; cached."""
    import torchvision.models.optical_flow as tvf

    from videossl.core.checkpoint import load_state, read_file, read_state_dict
    from videossl.models.tv_zoo import resolve_tv_weights

    if arch not in RAFT_ARCHS:
        raise VideosslError(f"raft: unknown arch {arch!r}; choose one of {', '.join(RAFT_ARCHS)}")
    if weights == "random":
        with torch.random.fork_rng(devices=[]):  # a fixed init that leaves the caller's RNG alone
            torch.manual_seed(0)
            model = getattr(tvf, arch)(weights=None)
    else:
        path, _source = resolve_tv_weights(arch, weights)
        model = getattr(tvf, arch)(weights=None)
        load_state(model, read_state_dict(read_file(path)), allow_missing=False, allow_unexpected=False, what=str(path),
                   hint=f"is it a torchvision {arch} checkpoint?")
    return model.eval().requires_grad_(False).to(device)


def _multiple_of_8(x: float) -> int:
    return int(math.ceil(x / 8) * 8)


def raft(first: torch.Tensor, second: torch.Tensor, *, arch: str = "raft_small", weights: str = "DEFAULT",
         num_flow_updates: int = 12, min_size: int = 128, batch: int = 32) -> torch.Tensor:
    """RAFT flow of each pair on their device (see the module docstring); (N, 3, H, W) ×2 → (N, H, W, 2) px."""
    model = _raft_model(arch, str(weights), str(first.device))
    h, w = first.shape[-2:]
    k = max(1.0, min_size / min(h, w))
    hh, ww = _multiple_of_8(h * k), _multiple_of_8(w * k)
    outs = []
    for i in range(0, first.shape[0], max(1, int(batch))):
        a, b = (x[i:i + batch].float() * 2 - 1 for x in (first, second))
        if (hh, ww) != (h, w):
            a, b = (F.interpolate(x, size=(hh, ww), mode="bilinear", align_corners=False) for x in (a, b))
        f = model(a.contiguous(), b.contiguous(), num_flow_updates=int(num_flow_updates))[-1]  # (n, 2, hh, ww)
        outs.append(resize_flow(f.permute(0, 2, 3, 1), h, w))
    return torch.cat(outs).float()


#: estimator name → ``(first (N, 3, H, W), second (N, 3, H, W), **opts) -> flow (N, H, W, 2)`` px (dx, dy),
#: frames float in [0, 1]. A new estimator is one function and one entry here.
FLOW_ESTIMATORS: dict[str, Callable[..., torch.Tensor]] = {
    "farneback": farneback,
    "dis": dis,
    "raft": raft,
}


def check_estimator(method: str, opts: dict[str, Any] | None = None) -> None:
    """A clear error for an unknown estimator or an option it does not take (before any frame is read)."""
    if method not in FLOW_ESTIMATORS:
        raise VideosslError(f"unknown flow estimator {method!r}; choose one of {', '.join(FLOW_ESTIMATORS)} "
                            "(TV-L1 needs OpenCV's contrib build and is not offered)")
    params = inspect.signature(FLOW_ESTIMATORS[method]).parameters
    known = [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    bad = sorted(set(opts or {}) - set(known))
    if bad:
        raise VideosslError(f"flow estimator {method!r} has no option(s) {', '.join(bad)}; its options: {', '.join(known)}")


@torch.no_grad()
def estimate_flow(clip: torch.Tensor, method: str = "farneback", **opts: Any) -> torch.Tensor:
    """Flow between consecutive frames: clip ``(B, 3, T, H, W)`` float in [0, 1] → ``(B, T-1, H, W, 2)``
    float32 px (dx, dy) on the clip's device, the synthetic set's ``forward`` convention (module docstring)."""
    check_estimator(method, opts)
    if clip.ndim != 5 or clip.shape[1] != 3 or clip.shape[2] < 2:
        raise VideosslError(f"flow estimation needs an RGB clip (B, 3, T >= 2, H, W), got shape {tuple(clip.shape)}")
    lo, hi = float(clip.min()), float(clip.max())
    if lo < -RANGE_SLACK or hi > 1 + RANGE_SLACK:
        raise VideosslError(f"flow estimation needs frames in [0, 1], got values in [{lo:.3g}, {hi:.3g}]: is the view "
                            "mean/std-normalised (augment mean/std)? estimate on the unnormalised clip")
    b, _, t, h, w = clip.shape
    frames = clip.permute(0, 2, 1, 3, 4)  # (B, T, 3, H, W)
    first = frames[:, :-1].reshape(-1, 3, h, w)
    second = frames[:, 1:].reshape(-1, 3, h, w)
    flow = FLOW_ESTIMATORS[method](first, second, **opts)
    return flow.reshape(b, t - 1, h, w, 2)
