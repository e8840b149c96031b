"""Flow, next-frame and label-propagation metrics of a flow autoencoder against ground-truth video.

Forecast flow EPE (end-point error; Baker et al., 2011) on all / foreground / moving pixels beside
zero flow, next-frame PSNR and SSIM (Wang et al., 2004) beside copy-last-frame, and label
propagation IoU (as in DAVIS-style mask propagation, Pont-Tuset et al., 2017) along the forecast
flows beside copy-mask and the ground-truth flow. The protocol in full is the ``videossl eval flow``
help (:mod:`videossl.eval.commands.flow`). Also the agreement of a flow *estimator*
(:mod:`videossl.models.flow_estimate`) with the ground-truth flow, and its cost beside decoding
(:func:`estimator_agreement`, ``tools/flow_estimate_epe.py``).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from videossl.data.loader import VideoShardDataset, ViewSpec, make_loader
from videossl.data.loader.batch import to_clip
from videossl.data.shards.format import load_manifest
from videossl.errors import VideosslError
from videossl.eval.runs import build_method
from videossl.losses.photometric import psnr, ssim
from videossl.models.flow_estimate import check_estimator, estimate_flow, resize_flow
from videossl.models.warp import backward_warp

KS = (1, 2, 5, 10)
MOVING_PX = 0.5


# ------------------------------------------------------------------------------------ metrics
def end_point_error(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Per-pixel ‖pred − gt‖₂; flows (..., 2, H, W) → (..., H, W)."""
    return (pred.float() - gt.float()).norm(dim=-3)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> float:
    m = mask.float()
    n = float(m.sum())
    return float((x * m).sum()) / n if n > 0 else float("nan")


def one_hot(mask: torch.Tensor, labels: list[int]) -> torch.Tensor:
    """(B, H, W) int labels → (B, len(labels), H, W) float one-hot of the given object labels."""
    return torch.stack([(mask == lab).float() for lab in labels], 1)


def propagate(soft: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """One step of label propagation: soft object maps (B, K, H, W) at frame t → frame t+1 with the
    backward flow B_{t+1→t} (B, 2, H, W) px: M_{t+1}(q) = M_t(q + B(q)); outside the frame = background."""
    return backward_warp(soft, flow, align_corners=True, padding_mode="zeros")


def hard_labels(soft: torch.Tensor, labels: list[int]) -> torch.Tensor:
    """Soft object maps (B, K, H, W) → label map: argmax over [background = 1 − Σ objects, objects]."""
    bg = (1 - soft.sum(1, keepdim=True)).clamp_min(0)
    idx = torch.cat([bg, soft], 1).argmax(1)
    lut = torch.tensor([0, *labels], device=soft.device)
    return lut[idx]


def mask_iou(pred: torch.Tensor, gt: torch.Tensor, labels: list[int]) -> torch.Tensor:
    """(B, H, W) label maps → (B,) IoU averaged over ``labels`` (1.0 for a label empty in both)."""
    ious = []
    for lab in labels:
        a, b = pred == lab, gt == lab
        inter = (a & b).flatten(1).sum(1).float()
        union = (a | b).flatten(1).sum(1).float()
        ious.append(torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union)))
    return torch.stack(ious, 1).mean(1)


def propagation_ious(mask_start: torch.Tensor, flows: list[torch.Tensor], gts: list[torch.Tensor], ks=KS) -> dict[int, float]:
    """One video: propagate ``mask_start`` (H, W) along ``flows`` (each (2, H, W)), IoU vs ``gts`` at k steps."""
    labels = [int(v) for v in torch.unique(mask_start).tolist() if v != 0]
    if not labels:
        return {}
    soft = one_hot(mask_start[None], labels)
    out = {}
    for j, flow in enumerate(flows):
        soft = propagate(soft, flow[None])
        k = j + 1
        if k in ks:
            out[k] = float(mask_iou(hard_labels(soft, labels), gts[j][None], labels)[0])
    return out


# ------------------------------------------------------------------------------------ model / data
def build_model(cfg: dict[str, Any]):
    """The LightningModule of a run / recipe config (its ``model:`` entry), without the online probe."""
    model = build_method(cfg, "the config", init_overrides={"num_classes": 0})
    if not hasattr(model, "forecast"):
        raise VideosslError(f"{type(model).__name__} is not a flow autoencoder (no forecast())")
    return model


def gt_for_clip(batch: dict[str, Any], view: int = 0, direction: str = "backward") -> tuple[torch.Tensor, torch.Tensor]:
    """Ground truth aligned with view ``view``: (``direction`` flow (B, T−1, 2, H, W), masks (B, T, H, W));
    ``backward`` B_{t+1→t} (what a flow autoencoder forecasts) or ``forward`` F_{t→t+1} (what an estimator gives)."""
    if "flow" not in batch or "mask" not in batch:
        raise VideosslError("the shard set has no flow.npz / mask.npy members (ground truth): use `videossl data synth`")
    idx = batch["indices"][view].long()  # (B, T)
    if (idx[:, 1:] - idx[:, :-1] != 1).any():
        raise VideosslError("flow evaluation needs consecutive frames (stride 1, no padding or looping)")
    if direction not in ("backward", "forward"):
        raise VideosslError(f"flow direction must be 'backward' or 'forward', got {direction!r}")
    gt = batch["flow"][direction]  # (B, T0-1, H, W, 2)
    masks = batch["mask"]  # (B, T0, H, W)
    b = torch.arange(idx.shape[0])[:, None]
    flow = gt[b, idx[:, :-1]].permute(0, 1, 4, 2, 3).float()
    return flow, masks[b, idx].long()


# ------------------------------------------------------------------------------------ evaluation
class Accumulator:
    """Sums per metric over videos; each video contributes its mean over steps / start frames."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, name: str, value: float) -> None:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return
        self.sums[name] = self.sums.get(name, 0.0) + float(value)
        self.counts[name] = self.counts.get(name, 0) + 1

    def means(self) -> dict[str, float]:
        return {k: self.sums[k] / self.counts[k] for k in sorted(self.sums)}


@torch.no_grad()
def evaluate_video_batch(model, clip: torch.Tensor, gt_flow: torch.Tensor, masks: torch.Tensor, acc: Accumulator,
                         ks=KS) -> dict[str, Any]:
    """Evaluate a batch of whole clips (B, C, T, H, W) with aligned GT; adds one entry per video to ``acc``."""
    res = model.forecast(clip)
    steps = res["steps"]
    s0 = steps[0]
    flow = res["flow"].float()  # (B, n, 2, H, W)
    gt = gt_flow[:, s0:s0 + len(steps)].to(flow.device)
    m_next = masks[:, s0 + 1:s0 + 1 + len(steps)].to(flow.device)
    err = end_point_error(flow, gt)  # (B, n, H, W)
    zero = gt.norm(dim=2)
    pred = res["pred"].float().clamp(0, 1)
    tgt, src = res["target"].float(), res["source"].float()
    B, n = pred.shape[:2]
    ps = psnr(pred.flatten(0, 1), tgt.flatten(0, 1)).view(B, n)
    ps0 = psnr(src.flatten(0, 1), tgt.flatten(0, 1)).view(B, n)
    ss = ssim(pred.flatten(0, 1), tgt.flatten(0, 1), reduction="none").view(B, n)
    ss0 = ssim(src.flatten(0, 1), tgt.flatten(0, 1), reduction="none").view(B, n)
    T = clip.shape[2]
    for b in range(B):
        fg, moving = m_next[b] > 0, zero[b] >= MOVING_PX
        allpix = torch.ones_like(fg)
        for name, sel in (("all", allpix), ("fg", fg), ("moving", moving)):
            acc.add(f"epe_{name}", masked_mean(err[b], sel))
            acc.add(f"epe_{name}_zero", masked_mean(zero[b], sel))
        acc.add("psnr", float(ps[b].mean()))
        acc.add("psnr_copy_last", float(ps0[b].mean()))
        acc.add("ssim", float(ss[b].mean()))
        acc.add("ssim_copy_last", float(ss0[b].mean()))
        per: dict[str, dict[int, list[float]]] = {"model": {}, "copy_mask": {}, "gt_flow": {}}
        for s in steps:
            horizon = T - 1 - s
            if horizon < 1:
                continue
            j0 = s - s0
            srcs = {
                "model": [flow[b, j0 + j] for j in range(horizon)],
                "copy_mask": [torch.zeros_like(flow[b, 0]) for _ in range(horizon)],
                "gt_flow": [gt_flow[b, s + j].to(flow.device) for j in range(horizon)],
            }
            gts = [masks[b, s + j + 1].to(flow.device) for j in range(horizon)]
            for name, fl in srcs.items():
                for k, v in propagation_ious(masks[b, s].to(flow.device), fl, gts, ks).items():
                    per[name].setdefault(k, []).append(v)
        for name, d in per.items():
            for k, vals in d.items():
                acc.add(f"iou_{name}_k{k}", sum(vals) / len(vals))
    return res


def _colour_masks(m: torch.Tensor) -> torch.Tensor:
    """(N, H, W) labels → (N, 3, H, W) uint8 (bg dark grey, object orange, distractor cyan)."""
    lut = torch.tensor([[40, 40, 40], [245, 140, 30], [40, 210, 220]], dtype=torch.uint8)
    return lut[m.clamp(0, 2).cpu()].permute(0, 3, 1, 2)


def save_panel(path: Path, clip: torch.Tensor, res: dict[str, Any], b: int, gt_flow: torch.Tensor, masks: torch.Tensor,
               max_cols: int = 8) -> None:
    """One PNG: rows = frame t, forecast Ŷ_{t+1}, true Y_{t+1}, true flow, forecast flow,
    GT mask at t+1, mask propagated with the forecast flow from frame burn_in."""
    from PIL import Image, ImageDraw
    from torchvision.utils import flow_to_image, make_grid

    steps = res["steps"][:max_cols]
    n = len(steps)
    s0 = steps[0]

    def img3(x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) float → (N, 3, H, W) uint8
        x = x.float().clamp(0, 1)
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        return (x * 255).round().to(torch.uint8).cpu()

    src = img3(res["source"][b, :n])
    pred = img3(res["pred"][b, :n])
    tgt = img3(res["target"][b, :n])
    fl_pred = res["flow"][b, :n].float().cpu()
    fl_gt = gt_flow[b, s0:s0 + n].float().cpu()
    both = flow_to_image(torch.cat([fl_gt, fl_pred]))  # one colour scale for both
    m_gt = masks[b, s0 + 1:s0 + 1 + n]
    labels = [int(v) for v in torch.unique(masks[b, s0]).tolist() if v != 0] or [1]
    soft = one_hot(masks[b, s0][None].cpu(), labels)
    props = []
    for j in range(n):
        soft = propagate(soft, fl_pred[j][None])
        props.append(hard_labels(soft, labels)[0])
    rows = [("frame t", src), ("forecast t+1", pred), ("true t+1", tgt), ("true flow", both[:n]),
            ("forecast flow", both[n:]), ("GT mask t+1", _colour_masks(m_gt)),
            ("propagated", _colour_masks(torch.stack(props)))]
    grid = make_grid(torch.cat([r for _, r in rows]), nrow=n, padding=2, pad_value=255)
    h = src.shape[-2]
    scale = max(1, 96 // h)
    im = Image.fromarray(grid.permute(1, 2, 0).numpy())
    im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    label_w = 110
    canvas = Image.new("RGB", (im.width + label_w, im.height + 18), "white")
    canvas.paste(im, (label_w, 18))
    draw = ImageDraw.Draw(canvas)
    draw.text((label_w, 2), "steps t = " + ", ".join(map(str, steps)), fill="black")
    for i, (name, _) in enumerate(rows):
        draw.text((4, 18 + (2 + i * (h + 2)) * scale + 4), name, fill="black")
    canvas.save(path)


def evaluate(model, data_dir: str, split: str, frames: int | None, batch_size: int, num_workers: int,
             max_videos: int | None, out_dir: Path, panels: int, device: str, decoder: str = "auto",
             ks=KS) -> dict[str, Any]:

    manifest = load_manifest(data_dir)
    video = manifest.get("video") or {}
    size, nf = video.get("height"), video.get("num_frames")
    if not size or video.get("width") != size:
        raise VideosslError(f"{data_dir}: flow evaluation needs square videos of known size (manifest 'video')")
    frames = int(frames or nf)
    if frames > nf:
        raise VideosslError(f"--frames {frames} exceeds the {nf} frames of the videos")
    view = ViewSpec(name="clip", sampler="uniform", frames=frames, stride=1, size=int(size), train=False, num_clips=1, crops=1)
    ds = VideoShardDataset(data_dir, [view], split=split, batch_size=batch_size, train=False, decoder=decoder,
                           extras=["flow.npz", "mask.npy"], rank=0, world_size=1)
    loader = make_loader(ds, num_workers=num_workers)
    model.eval().to(device)
    acc = Accumulator()
    seen, panel_paths = 0, []
    out_dir.mkdir(parents=True, exist_ok=True)
    for batch in loader:
        keep = ~batch["duplicate"]
        if max_videos is not None:
            room = max_videos - seen
            keep &= torch.cumsum(keep.long(), 0) <= room
        if not keep.any():
            if max_videos is not None and seen >= max_videos:
                break
            continue
        gt_flow, masks = gt_for_clip(batch)
        clip = to_clip(batch["views"][0][keep]).to(device)
        gt_flow, masks = gt_flow[keep], masks[keep]
        res = evaluate_video_batch(model, clip, gt_flow, masks, acc, ks)
        keys = [k for k, kp in zip(batch["key"], keep.tolist(), strict=True) if kp]
        for b, key in enumerate(keys):
            if len(panel_paths) < panels:
                p = out_dir / f"panel-{key}.png"
                save_panel(p, clip, res, b, gt_flow, masks)
                panel_paths.append(str(p))
        seen += len(keys)
    if seen == 0:
        raise VideosslError(f"no videos evaluated in {data_dir} split {split}")
    return {"metrics": acc.means(), "videos": seen, "frames": frames, "size": int(size), "panels": panel_paths,
            "burn_in": int(model.burn_in), "ks": list(ks), "mode": getattr(model, "mode", "forecast")}


def report_lines(r: dict[str, Any]) -> list[str]:
    m = r["metrics"]

    def f(key: str, fmt: str = "{:.3f}") -> str:
        return fmt.format(m[key]) if key in m else "–"

    lines = [
        f"videos: {r['videos']}, frames per video: {r['frames']} at {r['size']}x{r['size']}, burn-in {r['burn_in']} "
        + ("(forecast flow from frames <= t)" if r.get("mode", "forecast") == "forecast"
           else "(mode 'pair': flow ESTIMATED from frames <= t+1, a diagnostic, not a forecast)"), "",
        "| EPE (px) | model | zero flow |", "|---|---|---|",
    ]
    for name in ("all", "fg", "moving"):
        lines.append(f"| {name} | {f(f'epe_{name}')} | {f(f'epe_{name}_zero')} |")
    lines += ["", "| next frame | model | copy last frame |", "|---|---|---|",
              f"| PSNR (dB) | {f('psnr', '{:.2f}')} | {f('psnr_copy_last', '{:.2f}')} |",
              f"| SSIM | {f('ssim', '{:.4f}')} | {f('ssim_copy_last', '{:.4f}')} |",
              "", "| label propagation IoU | " + " | ".join(f"k={k}" for k in r["ks"]) + " |",
              "|---|" + "---|" * len(r["ks"])]
    for name in ("model", "copy_mask", "gt_flow"):
        lines.append(f"| {name} | " + " | ".join(f(f"iou_{name}_k{k}") for k in r["ks"]) + " |")
    return lines


# ------------------------------------------------------------------------------------ flow estimators
def estimator_agreement(data_dir: str, split: str, method: str, sizes: list[int], opts: dict[str, Any] | None = None,
                        frames: int | None = None, stride: int = 1, max_videos: int | None = None,
                        decoder: str = "auto", device: str = "cpu") -> dict[str, Any]:
    """A flow estimator (:mod:`videossl.models.flow_estimate`) on the decoded videos of a shard set, per
    resolution in ``sizes``: each video is read as one clip (``frames`` at ``stride``, default all at 1)
    resized so its short side is the size and centre-cropped square, as an eval view is (the whole frame
    of a square video). With ground truth (``flow.npz`` / ``mask.npy``, square videos): EPE (px at that
    size) of the estimated flow F_{t→t+1} against ``forward`` resized with its vectors rescaled
    (:func:`~videossl.models.flow_estimate.resize_flow`), on all, foreground (mask of frame t > 0) and
    moving (‖GT‖ ≥ 0.5 px at that size) pixels, beside zero flow (‖GT‖); means over frame pairs, then
    videos. Always: the mean length of the estimated vectors (``flow_px``), and milliseconds per clip of
    decoding (the reader producing the view, one clip per batch, in this process) and of the estimator
    on the same clip."""
    opts = dict(opts or {})
    check_estimator(method, opts)
    manifest = load_manifest(data_dir)
    video = manifest.get("video") or {}
    nf = video.get("num_frames")
    has_gt = "flow.npz" in (manifest.get("ground_truth") or {})
    if has_gt and (not video.get("height") or video.get("width") != video.get("height")):
        raise VideosslError(f"{data_dir}: flow agreement with ground truth needs square videos of known size (manifest 'video')")
    if frames is None:
        if not nf:
            raise VideosslError(f"{data_dir}: the videos' frame count varies: give --frames")
        frames = int(nf) // max(1, stride)
    if has_gt and stride != 1:
        raise VideosslError("agreement with the ground-truth flow needs consecutive frames: --stride 1")
    out: dict[str, Any] = {"method": method, "opts": opts, "frames": int(frames), "stride": int(stride),
                           "ground_truth": bool(has_gt), "sizes": {}}
    for size in sizes:
        spec = ViewSpec(name="clip", sampler="uniform", frames=int(frames), stride=int(stride), size=int(size), train=False,
                        num_clips=1, crops=1)
        ds = VideoShardDataset(data_dir, [spec], split=split, batch_size=1, train=False, decoder=decoder,
                               extras=["flow.npz", "mask.npy"] if has_gt else [], rank=0, world_size=1)
        acc, decode_s, estimate_s, seen = Accumulator(), 0.0, 0.0, 0
        it = iter(make_loader(ds, num_workers=0))
        while max_videos is None or seen < max_videos:
            t0 = time.perf_counter()
            batch = next(it, None)
            t1 = time.perf_counter()
            if batch is None:
                break
            if bool(batch["duplicate"][0]):
                continue
            clip = to_clip(batch["views"][0]).to(device)
            t2 = time.perf_counter()
            flow = estimate_flow(clip, method, **opts)  # (1, T-1, S, S, 2)
            if flow.device.type == "cuda":
                torch.cuda.synchronize(flow.device)
            decode_s, estimate_s, seen = decode_s + (t1 - t0), estimate_s + (time.perf_counter() - t2), seen + 1
            acc.add("flow_px", float(flow.norm(dim=-1).mean()))
            if has_gt:
                gt, masks = gt_for_clip(batch, direction="forward")  # (1, T-1, 2, H, W) at the video's size
                s = clip.shape[-1]
                gt = resize_flow(gt[0].permute(0, 2, 3, 1), s, s).permute(0, 3, 1, 2).to(flow.device)
                fg = torch.nn.functional.interpolate(masks[0, :-1, None].float(), size=(s, s), mode="nearest")[:, 0] > 0
                err = end_point_error(flow[0].permute(0, 3, 1, 2), gt)  # (T-1, S, S)
                zero = gt.norm(dim=1)
                for name, sel in (("all", torch.ones_like(zero, dtype=torch.bool)), ("fg", fg.to(zero.device)),
                                  ("moving", zero >= MOVING_PX)):
                    acc.add(f"epe_{name}", masked_mean(err, sel))
                    acc.add(f"epe_{name}_zero", masked_mean(zero, sel))
        if seen == 0:
            raise VideosslError(f"no videos read in {data_dir} split {split}")
        out["sizes"][int(size)] = {"videos": seen, "metrics": acc.means(), "decode_ms": 1e3 * decode_s / seen,
                                   "estimate_ms": 1e3 * estimate_s / seen}
    return out


def estimator_lines(r: dict[str, Any]) -> list[str]:
    """Markdown of :func:`estimator_agreement`: one row per size."""
    opts = ", ".join(f"{k}={v}" for k, v in r["opts"].items()) or "defaults"
    lines = [f"estimator: {r['method']} ({opts}); {r['frames']} frames at stride {r['stride']} per video", ""]
    if r["ground_truth"]:
        lines += ["| size | videos | EPE all | zero all | EPE fg | zero fg | EPE moving | zero moving | mean ‖flow‖ "
                  "| decode ms/clip | estimate ms/clip |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    else:
        lines += ["| size | videos | mean ‖flow‖ | decode ms/clip | estimate ms/clip |", "|---|---|---|---|---|"]
    for size, row in r["sizes"].items():
        m = row["metrics"]
        epe = [f"{m.get(f'epe_{n}{z}', float('nan')):.3f}" for n in ("all", "fg", "moving") for z in ("", "_zero")]
        cells = [str(size), str(row["videos"]), *(epe if r["ground_truth"] else []), f"{m['flow_px']:.3f}",
                 f"{row['decode_ms']:.1f}", f"{row['estimate_ms']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


__all__ = [
    "KS",
    "Accumulator",
    "build_model",
    "end_point_error",
    "estimator_agreement",
    "estimator_lines",
    "evaluate",
    "evaluate_video_batch",
    "gt_for_clip",
    "hard_labels",
    "mask_iou",
    "one_hot",
    "propagate",
    "propagation_ious",
]
