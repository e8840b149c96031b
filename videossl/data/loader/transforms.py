"""Video-consistent augmentation: one random draw per clip, applied to every frame.

Clips are uint8 tensors ``(T, C, H, W)`` (C = 3, RGB). Random parameters are drawn once per clip by
:func:`draw_params` (from a passed ``torch.Generator``, or the global torch RNG) and applied with
``torchvision.transforms.v2.functional`` ops, which treat the leading ``T`` as a batch dimension, so
every frame gets the same crop, flip, jitter, grayscale, blur and solarize.

Step order and defaults follow BraVe (arXiv:2103.16559): random resized crop (area [0.3, 1], aspect
[0.5, 2]) → scale to [0, 1] → horizontal flip (p 0.5) → colour jitter (p 0.8; fixed order
brightness (additive, ±32/255), saturation, contrast, hue (a YIQ rotation, see :func:`hue_matrices`))
→ grayscale (p 0.2) → Gaussian blur (always; kernel = size // 10 made odd, sigma ~ U(0.1, 2),
separable) → solarize (off) → optional normalise
(off: BraVe uses none).

:class:`BatchVideoAugment` does the same on ``(B, T, C, H, W)`` batches on any device, with
per-sample parameters (crop via ``torchvision.ops.roi_align``, blur via a grouped convolution).
Device-side augmentation in training (``data.augment_on: device``) splits a view in two: the workers
draw every parameter and do the geometric part (:meth:`VideoAugment.crop_flip`, uint8), the batch
carries the photometric parameters, and :class:`DevicePhotometric` applies them on the device.
:class:`EvalTransform` is deterministic: resize the short side, then a centre crop or ``C`` crops
evenly spaced along both axes (3 crops: top-left, centre, bottom-right).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as nnf
import torchvision.transforms.v2.functional as F
from torchvision.ops import roi_align

from videossl.errors import VideosslError

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


@dataclass
class AugmentConfig:
    """Training augmentation of one view (defaults: BraVe). Probabilities are per clip."""

    scale: tuple[float, float] = (0.3, 1.0)  # crop area fraction
    ratio: tuple[float, float] = (0.5, 2.0)  # crop aspect ratio w/h
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 32 / 255  # additive delta ~ U(-b, b) on [0, 1] values
    contrast: float = 0.4  # factor ~ U(1 - c, 1 + c)
    saturation: float = 0.4  # factor ~ U(1 - s, 1 + s)
    hue: float = 0.2  # shift ~ U(-h, h), in turns (|h| <= 0.5)
    grayscale_p: float = 0.2
    blur_p: float = 1.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel_frac: float = 0.1  # kernel = int(size * frac), made odd (23 at 224, 11 at 112)
    solarize_p: float = 0.0
    solarize_threshold: float = 0.5  # on [0, 1] values
    mean: tuple[float, float, float] | None = None  # normalise when both mean and std are set
    std: tuple[float, float, float] | None = None
    output: str = "float"  # "float" ([0, 1] or normalised) or "uint8"

    def __post_init__(self) -> None:
        self.scale, self.ratio, self.blur_sigma = tuple(self.scale), tuple(self.ratio), tuple(self.blur_sigma)
        if self.mean is not None:
            self.mean = tuple(self.mean)
        if self.std is not None:
            self.std = tuple(self.std)
        if not (0 < self.scale[0] <= self.scale[1] <= 1):
            raise VideosslError(f"augment scale must satisfy 0 < lo <= hi <= 1, got {self.scale}")
        if not (0 < self.ratio[0] <= self.ratio[1]):
            raise VideosslError(f"augment ratio must satisfy 0 < lo <= hi, got {self.ratio}")
        if not 0 <= self.hue <= 0.5:
            raise VideosslError(f"augment hue must be in [0, 0.5], got {self.hue}")
        for name in ("flip_p", "jitter_p", "grayscale_p", "blur_p", "solarize_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise VideosslError(f"augment {name} must be a probability in [0, 1], got {getattr(self, name)}")
        if self.output not in ("float", "uint8"):
            raise VideosslError(f"augment output must be 'float' or 'uint8', got {self.output!r}")
        if (self.mean is None) != (self.std is None):
            raise VideosslError("augment normalisation needs both mean and std (or neither)")
        if self.output == "uint8" and self.mean is not None:
            raise VideosslError("augment output 'uint8' cannot be normalised: use output 'float'")


def blur_kernel_size(size: int, frac: float = 0.1) -> int:
    """BraVe's kernel: ``int(size * frac)`` made odd (at least 1). 224 → 23, 112 → 11."""
    k = int(size * frac)
    return max(1, k if k % 2 == 1 else k + 1)


def _uniform(n: int, lo: float, hi: float, g: torch.Generator | None) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)


def _rand(shape: tuple[int, ...], g: torch.Generator | None) -> np.ndarray:
    return torch.rand(shape, generator=g, dtype=torch.float64).numpy()


def _crop_boxes(n: int, height: int, width: int, scale, ratio, g: torch.Generator | None,
                draws: np.ndarray | None = None, logr: torch.Tensor | None = None) -> torch.Tensor:
    """RandomResizedCrop boxes (top, left, h, w) per sample, torchvision's rule (10 tries, then centre).

    The draws come from ``g`` (torch, float64, in a fixed order); the arithmetic is done in numpy
    (the same IEEE float64 operations; ``exp`` stays torch's) because ~40 torch calls on tiny
    tensors cost ~1.5 ms per clip of Python overhead in a data worker. ``draws`` / ``logr``: the
    ``22 n`` uniform draws (target area ``10 n``, log-ratio ``10 n``, position ``2 n``) already taken
    from ``g`` in that order, and the log-ratios already scaled (:func:`draw_params` takes every draw
    of a clip in one call).
    """
    area = height * width
    tries = 10
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    if draws is None:
        target = area * (scale[0] + (scale[1] - scale[0]) * _rand((n * tries,), g).reshape(n, tries))
        logr = lo + (hi - lo) * torch.rand(n * tries, generator=g, dtype=torch.float64)
        u = None
    else:
        target = area * (scale[0] + (scale[1] - scale[0]) * draws[: n * tries].reshape(n, tries))
        u = draws[2 * n * tries :].reshape(n, 2)
    ar = torch.exp(logr).numpy().reshape(n, tries)
    w = np.round(np.sqrt(target * ar))
    h = np.round(np.sqrt(target / ar))
    ok = (w > 0) & (h > 0) & (w <= width) & (h <= height)
    first = np.where(ok.any(1), ok.argmax(1), -1)
    # fallback: centre crop at the clamped aspect ratio
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        fh, fw = height, int(round(height * ratio[1]))
    else:
        fw, fh = width, height
    rows = np.arange(n)
    found = first >= 0
    hh = np.where(found, h[rows, np.maximum(first, 0)], float(fh))
    ww = np.where(found, w[rows, np.maximum(first, 0)], float(fw))
    if u is None:
        u = _rand((n, 2), g)
    top = np.where(found, np.floor(u[:, 0] * (height - hh + 1)), np.floor((height - hh) / 2 + 0.5))
    left = np.where(found, np.floor(u[:, 1] * (width - ww + 1)), np.floor((width - ww) / 2 + 0.5))
    return torch.from_numpy(np.stack([top, left, hh, ww], 1).astype(np.int64))


def scale_box(box: torch.Tensor, src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> torch.Tensor:
    """A crop box (top, left, h, w) drawn on ``src_hw`` frames, on the same frames scaled to ``dst_hw``
    (rounded to whole pixels, kept inside the frame)."""
    sy, sx = dst_hw[0] / src_hw[0], dst_hw[1] / src_hw[1]
    top, left, h, w = (float(v) for v in box)
    h2 = min(dst_hw[0], max(1, round(h * sy)))
    w2 = min(dst_hw[1], max(1, round(w * sx)))
    t2 = min(dst_hw[0] - h2, max(0, round(top * sy)))
    l2 = min(dst_hw[1] - w2, max(0, round(left * sx)))
    return torch.tensor([t2, l2, h2, w2], dtype=box.dtype)


def draw_params(cfg: AugmentConfig, n: int, height: int, width: int,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Random parameters of ``n`` clips (CPU tensors, one row per clip).

    The order of the draws is fixed: the five coin flips ``(n, 5)``, the crop boxes (:func:`_crop_boxes`:
    ``10 n`` areas, ``10 n`` log-ratios, ``2 n`` positions), then ``n`` each of brightness, saturation,
    contrast, hue and sigma. They are taken in *one* ``torch.rand(32 n)`` call: torch's CPU generator fills
    float64 uniforms one after another, so the values are those of one call per group (tested), at a
    tenth of the Python overhead.
    """
    g = generator
    r = torch.rand(32 * n, generator=g, dtype=torch.float64)
    a = r.numpy()
    tries = 10
    p = a[: 5 * n].reshape(n, 5)
    box_draws = a[5 * n : 27 * n]
    lo, hi = math.log(cfg.ratio[0]), math.log(cfg.ratio[1])
    logr = lo + (hi - lo) * r[5 * n + n * tries : 5 * n + 2 * n * tries]  # torch arithmetic, as the per-group draw
    rest = a[27 * n :].reshape(5, n)

    def uniform(k: int, lo: float, hi: float) -> torch.Tensor:  # == _uniform(n, lo, hi, g), without torch op overhead
        return torch.from_numpy(lo + (hi - lo) * rest[k])

    return {
        "box": _crop_boxes(n, height, width, cfg.scale, cfg.ratio, g, draws=box_draws, logr=logr),
        "flip": torch.from_numpy(p[:, 0] < cfg.flip_p),
        "jitter": torch.from_numpy(p[:, 1] < cfg.jitter_p),
        "brightness": uniform(0, -cfg.brightness, cfg.brightness),
        "saturation": uniform(1, 1 - cfg.saturation, 1 + cfg.saturation),
        "contrast": uniform(2, 1 - cfg.contrast, 1 + cfg.contrast),
        "hue": uniform(3, -cfg.hue, cfg.hue),
        "gray": torch.from_numpy(p[:, 2] < cfg.grayscale_p),
        "blur": torch.from_numpy(p[:, 3] < cfg.blur_p),
        "sigma": uniform(4, cfg.blur_sigma[0], cfg.blur_sigma[1]),
        "solarize": torch.from_numpy(p[:, 4] < cfg.solarize_p),
    }


_RGB2YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=torch.float64)
_YIQ2RGB = torch.linalg.inv(_RGB2YIQ)


def hue_matrices(hue: torch.Tensor) -> torch.Tensor:
    """(n, 3, 3) RGB matrices rotating the hue by ``hue`` turns in YIQ space (as NVIDIA DALI's hue op).

    A close, ~100x cheaper stand-in for torchvision's exact HSV ``adjust_hue`` (125 ms on a
    16x224x224 clip on one core): it keeps luma, and 0 is the identity.
    """
    theta = hue.to(torch.float64) * 2 * math.pi
    c, s = torch.cos(theta), torch.sin(theta)
    rot = torch.zeros(hue.shape[0], 3, 3, dtype=torch.float64)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = c, -s, s, c
    return _YIQ2RGB @ rot @ _RGB2YIQ


def apply_hue(x: torch.Tensor, hue: torch.Tensor) -> torch.Tensor:
    """Hue-rotate a batch ``(B, T, 3, H, W)`` by ``hue[b]`` turns (values clamped to [0, 1])."""
    m = hue_matrices(hue).to(device=x.device, dtype=x.dtype)
    return torch.einsum("bij,btjhw->btihw", m, x).clamp_(0, 1)


def blur_clips(x: torch.Tensor, kernel: int, sigma: torch.Tensor, apply: torch.Tensor | None = None) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, T, C, H, W)`` with one sigma per sample (reflect padding).

    Same kernel as torchvision's ``gaussian_blur`` but as two 1-D convolutions (torchvision
    convolves with the full k x k kernel: 191 ms vs ~15 ms for k = 23 on a 16x224x224 clip).
    """
    B, T, C, H, W = x.shape
    k = kernel
    r = torch.arange(k, dtype=torch.float64) - (k - 1) / 2
    ker = torch.exp(-0.5 * (r[None] / sigma.to(torch.float64)[:, None]) ** 2)
    ker = ker / ker.sum(1, keepdim=True)
    if apply is not None:
        ident = torch.zeros(k, dtype=torch.float64)
        ident[k // 2] = 1
        ker = torch.where(apply[:, None], ker, ident[None])
    wt = ker.to(device=x.device, dtype=x.dtype).repeat_interleave(T * C, 0)  # (B*T*C, k)
    y = x.reshape(1, B * T * C, H, W)
    pad = k // 2
    mode_w, mode_h = ("reflect" if pad < W else "replicate"), ("reflect" if pad < H else "replicate")
    y = nnf.conv2d(nnf.pad(y, (pad, pad, 0, 0), mode=mode_w), wt[:, None, None, :], groups=B * T * C)
    y = nnf.conv2d(nnf.pad(y, (0, 0, pad, pad), mode=mode_h), wt[:, None, :, None], groups=B * T * C)
    return y.view(B, T, C, H, W)


def _finish(x: torch.Tensor, cfg: AugmentConfig, channel_dim: int) -> torch.Tensor:
    """``x`` float in [0, 1] → the configured output (uint8, [0, 1] float or normalised)."""
    x = x.clamp(0, 1)
    if cfg.output == "uint8":
        return (x * 255).round_().clamp_(0, 255).to(torch.uint8)
    if cfg.mean is not None:
        shape = [1] * x.dim()
        shape[channel_dim] = 3
        mean = torch.tensor(cfg.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(cfg.std, dtype=x.dtype, device=x.device).view(shape)
        x = (x - mean) / std
    return x


def _check_clip(x: torch.Tensor) -> None:
    if x.dim() != 4 or x.shape[1] != 3:
        raise VideosslError(f"expected a clip (T, 3, H, W), got shape {tuple(x.shape)}")


def _native_uint8_bilinear() -> bool:
    """Whether torchvision resizes uint8 with torch's own uint8 antialiased kernel here (AVX2 / ARM: yes)."""
    try:
        from torchvision.transforms.v2.functional._geometry import _do_native_uint8_resize_on_cpu

        return bool(_do_native_uint8_resize_on_cpu(F.InterpolationMode.BILINEAR))
    except Exception:  # another torchvision: keep its public path
        return False


_NATIVE_UINT8 = _native_uint8_bilinear()


def resized_crop(clip: torch.Tensor, box: tuple[int, int, int, int], size: int) -> torch.Tensor:
    """``F.resized_crop(clip, *box, [size, size], antialias=True)`` (bilinear), the same values and layout.

    A uint8 CPU clip of several frames takes torchvision's own path without its Python dispatch: the crop
    (a view) goes to ``interpolate`` exactly as ``resize_image`` calls it (tested bitwise equal, same output
    layout). The kernel itself copies a crop that is not contiguous into one channels-last block (the whole
    clip's crop, ~1.2 ms of the ~2 ms per 16-frame 602x256 clip; BENCHMARKS.md, session 9), then resizes it
    frame by frame; copying it here first only moves that copy. Anything else goes through torchvision.
    """
    top, left, h, w = box
    native = (_NATIVE_UINT8 and clip.dtype == torch.uint8 and clip.device.type == "cpu" and clip.dim() == 4
              and clip.shape[1] == 3 and clip.shape[0] > 1)
    if not (native and top >= 0 and left >= 0 and top + h <= clip.shape[-2] and left + w <= clip.shape[-1]):
        return F.resized_crop(clip, top, left, h, w, [size, size], antialias=True)
    x = clip[..., top : top + h, left : left + w]
    if (h, w) == (size, size):
        return x
    return nnf.interpolate(x, size=[size, size], mode="bilinear", align_corners=False, antialias=True)


class VideoAugment:
    """Augment one clip ``(T, 3, H, W)`` (uint8 or float in [0, 1]) to ``(T, 3, size, size)``."""

    def __init__(self, size: int, cfg: AugmentConfig | None = None):
        self.size = int(size)
        self.cfg = cfg or AugmentConfig()
        self.kernel = blur_kernel_size(self.size, self.cfg.blur_kernel_frac)

    def draw(self, clip: torch.Tensor, generator: torch.Generator | None = None,
             source_hw: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
        """One clip's parameters (one row of :func:`draw_params`), drawn for ``clip``'s frame size, or for
        ``source_hw`` when the frames were decoded smaller than the source (decode-side downscaling): the
        draws are then those of the full-size frames and the crop box is scaled to ``clip``'s frames."""
        _check_clip(clip)
        hw = tuple(clip.shape[-2:])
        src = hw if source_hw is None else tuple(int(v) for v in source_hw)
        prm = {k: v[0] for k, v in draw_params(self.cfg, 1, src[0], src[1], generator).items()}
        if src != hw:
            prm["box"] = scale_box(prm["box"], src, hw)
        return prm

    def __call__(self, clip: torch.Tensor, generator: torch.Generator | None = None,
                 source_hw: tuple[int, int] | None = None) -> torch.Tensor:
        return self.apply(clip, self.draw(clip, generator, source_hw))

    def crop_flip(self, clip: torch.Tensor, prm: dict[str, torch.Tensor]) -> torch.Tensor:
        """The geometric part only (random resized crop + flip), uint8 in and out: what the data workers do
        when the photometric part runs on the device (:class:`DevicePhotometric`)."""
        if clip.dtype != torch.uint8:
            raise VideosslError(f"crop_flip takes uint8 clips, got {clip.dtype}")
        x = resized_crop(clip, tuple(prm["box"].tolist()), self.size)
        # left in the channels-last layout the resize produced: collate's stack writes the batch once;
        # a .contiguous() here was a second full copy (~2.5 ms of a 31 ms clip at 16x112x112).
        # x.flip(-1) is torchvision's horizontal_flip kernel for a plain tensor, without its dispatch
        return x.flip(-1) if prm["flip"] else x

    def apply(self, clip: torch.Tensor, prm: dict[str, torch.Tensor]) -> torch.Tensor:
        """Apply given parameters (one row of :func:`draw_params`) to ``clip``."""
        cfg = self.cfg
        x = resized_crop(clip, tuple(prm["box"].tolist()), self.size)
        if x.dtype == torch.uint8 and cfg.output == "uint8" and not self._photometric(prm):
            # crop (+ flip) only, uint8 in and out: the float round trip is the identity, skip it
            # (the CPU half of the GPU-split augmentation does only this)
            return F.horizontal_flip(x) if prm["flip"] else x  # layout: see crop_flip
        x = x.float().div_(255) if x.dtype == torch.uint8 else x.float()
        if prm["flip"]:
            x = F.horizontal_flip(x)
        if prm["jitter"]:
            x = (x + float(prm["brightness"])).clamp_(0, 1)
            x = F.adjust_saturation(x, float(prm["saturation"]))
            x = F.adjust_contrast(x, float(prm["contrast"]))
            if float(prm["hue"]) != 0:
                x = apply_hue(x[None], prm["hue"][None])[0]
        if prm["gray"]:
            x = F.rgb_to_grayscale(x, num_output_channels=3)
        if prm["blur"] and self.kernel > 1:
            x = blur_clips(x[None], self.kernel, prm["sigma"][None])[0]
        if prm["solarize"]:
            x = F.solarize(x, cfg.solarize_threshold)
        return _finish(x, cfg, channel_dim=1).contiguous()  # channels-last input → contiguous output

    def _photometric(self, prm: dict[str, torch.Tensor]) -> bool:
        """Whether any value-changing step (jitter, grayscale, blur, solarize) applies with ``prm``."""
        return bool(prm["jitter"] or prm["gray"] or (prm["blur"] and self.kernel > 1) or prm["solarize"])


def _gray(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(-3)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(-3)


def _bshape(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.to(device=x.device, dtype=x.dtype if v.is_floating_point() else v.dtype).view(-1, *([1] * (x.dim() - 1)))


#: the parameters of :func:`draw_params` that the photometric part uses (what a batch carries to the device)
PHOTOMETRIC_PARAMS = ("jitter", "brightness", "saturation", "contrast", "hue", "gray", "blur", "sigma", "solarize")


def photometric(x: torch.Tensor, prm: dict[str, torch.Tensor], cfg: AugmentConfig, kernel: int) -> torch.Tensor:
    """Colour jitter → grayscale → blur → solarize of a float batch ``(B, T, 3, S, S)`` in [0, 1], with
    per-sample parameters ``prm`` (rows of :func:`draw_params`), on ``x``'s device; the same arithmetic as
    :meth:`VideoAugment.apply` (torchvision's blend formulas for saturation and contrast)."""
    jit = _bshape(prm["jitter"], x)
    y = (x + _bshape(prm["brightness"], x)).clamp(0, 1)
    sat = _bshape(prm["saturation"], x)
    y = (sat * y + (1 - sat) * _gray(y)).clamp(0, 1)
    con = _bshape(prm["contrast"], x)
    mean = _gray(y).mean(dim=(-3, -2, -1), keepdim=True)  # per frame, like adjust_contrast
    y = (con * y + (1 - con) * mean).clamp(0, 1)
    y = apply_hue(y, prm["hue"])
    x = torch.where(jit, y, x)
    x = torch.where(_bshape(prm["gray"], x), _gray(x).expand_as(x), x)
    if kernel > 1 and bool(prm["blur"].any()):
        x = blur_clips(x, kernel, prm["sigma"], prm["blur"])
    thr = cfg.solarize_threshold
    return torch.where(_bshape(prm["solarize"], x) & (x >= thr), 1 - x, x)


class DevicePhotometric(torch.nn.Module):
    """The photometric half of a view's augmentation, batched on the device: uint8 crops ``(B, T, 3, S, S)``
    (from :meth:`VideoAugment.crop_flip` in the workers) + their per-sample parameters → the view's output
    (float in [0, 1], normalised, or uint8, as ``cfg`` says).

    The parameters were drawn in the workers by the same generator calls as the all-in-workers path, so the
    two placements see identical parameters and are reproducible from the seed in the same way; outputs agree
    up to float rounding (tested).
    """

    def __init__(self, size: int, cfg: AugmentConfig | None = None):
        super().__init__()
        self.size = int(size)
        self.cfg = cfg or AugmentConfig()
        self.kernel = blur_kernel_size(self.size, self.cfg.blur_kernel_frac)

    @torch.no_grad()
    def forward(self, crops: torch.Tensor, prm: dict[str, torch.Tensor]) -> torch.Tensor:
        if crops.dim() != 5 or crops.shape[2] != 3 or crops.dtype != torch.uint8:
            raise VideosslError(f"expected uint8 crops (B, T, 3, S, S), got {crops.dtype} {tuple(crops.shape)}")
        x = crops.float().div_(255)
        return _finish(photometric(x, prm, self.cfg, self.kernel), self.cfg, channel_dim=2)


class BatchVideoAugment(DevicePhotometric):
    """Augment a batch ``(B, T, 3, H, W)`` on its device; per-sample parameters, shared by all frames.

    Same steps and parameter draws as :class:`VideoAugment` (``draw_params``); the crop resize is
    ``roi_align`` with adaptive sampling (bilinear with area averaging), so values differ slightly
    from the single-clip path's antialiased resize.
    """

    @torch.no_grad()
    def forward(
        self, batch: torch.Tensor, generator: torch.Generator | None = None, params: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Augment ``batch``; ``params`` (from :func:`draw_params`) replaces the random draw."""
        if batch.dim() != 5 or batch.shape[2] != 3:
            raise VideosslError(f"expected a batch (B, T, 3, H, W), got shape {tuple(batch.shape)}")
        cfg, S = self.cfg, self.size
        B, T, C, H, W = batch.shape
        prm = params if params is not None else draw_params(cfg, B, H, W, generator)
        x = batch.float()
        if batch.dtype == torch.uint8:
            x = x.div_(255)
        # crop + resize: one box per sample, repeated for its T frames
        top, left, h, w = prm["box"].to(torch.float32).unbind(1)
        boxes = torch.stack([left, top, left + w, top + h], 1).repeat_interleave(T, 0)
        rois = torch.cat([torch.arange(B * T, dtype=torch.float32)[:, None], boxes], 1).to(x.device)
        x = roi_align(x.reshape(B * T, C, H, W), rois, output_size=(S, S), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
        x = x.view(B, T, C, S, S).clamp_(0, 1)
        x = torch.where(_bshape(prm["flip"], x), x.flip(-1), x)
        return _finish(photometric(x, prm, cfg, self.kernel), cfg, channel_dim=2)


class EvalTransform:
    """Deterministic: resize the short side to ``resize`` (default ``size``), then ``crops`` crops.

    ``crops == 1``: the centre crop. ``crops == C > 1``: crops whose top-left corners are evenly
    spaced on the diagonal, ``round(i * (H' - size) / (C - 1))`` and ``round(i * (W' - size) / (C - 1))``
    (3 crops: top-left, centre, bottom-right; along the short side all offsets are 0 when
    ``resize == size``). Returns a list of ``crops`` clips ``(T, 3, size, size)``.
    """

    def __init__(self, size: int, resize: int | None = None, crops: int = 1, cfg: AugmentConfig | None = None):
        if crops < 1:
            raise VideosslError(f"eval crops must be >= 1, got {crops}")
        self.size, self.resize, self.crops = int(size), int(resize or size), int(crops)
        if self.resize < self.size:
            raise VideosslError(f"eval resize ({self.resize}) must be >= the crop size ({self.size})")
        self.cfg = cfg or AugmentConfig()

    def offsets(self, height: int, width: int) -> list[tuple[int, int]]:
        """(top, left) of each crop in a ``height`` x ``width`` frame (after the short-side resize)."""
        dh, dw = height - self.size, width - self.size
        if self.crops == 1:
            return [(int(round(dh / 2)), int(round(dw / 2)))]
        return [(int(round(i * dh / (self.crops - 1))), int(round(i * dw / (self.crops - 1)))) for i in range(self.crops)]

    def resized_shape(self, height: int, width: int) -> tuple[int, int]:
        if height <= width:
            return self.resize, max(self.resize, int(round(width * self.resize / height)))
        return max(self.resize, int(round(height * self.resize / width))), self.resize

    def __call__(self, clip: torch.Tensor, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        _check_clip(clip)
        H, W = clip.shape[-2:]
        h2, w2 = self.resized_shape(H, W)
        x = clip if (h2, w2) == (H, W) else F.resize(clip, [h2, w2], antialias=True)
        out = []
        for top, left in self.offsets(h2, w2):
            c = x[..., top : top + self.size, left : left + self.size]
            c = c.float().div(255) if c.dtype == torch.uint8 else c.float()
            out.append(_finish(c, self.cfg, channel_dim=1).contiguous())
        return out
