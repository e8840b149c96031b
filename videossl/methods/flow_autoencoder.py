"""Spatio-temporal video autoencoder with differentiable memory (Pătrăucean, Handa, Cipolla 2016).

One step t (frames Y_1..Y_t seen, Y_{t+1} forecast; arXiv:1511.06309 §2)::

    X_t = E(Y_t)                               spatial encoder (per frame)
    h_t, c_t = ConvLSTM(X_t, h_{t−1}, c_{t−1})   memory (no peepholes)
    T_t = FlowHead(h_t)                         dense 2-channel flow (dx, dy), forecast from frames ≤ t
    X̂_{t+1} = Sampler(X_t, grid + T_t)          bilinear *backward* warp of the current frame's features
    Ŷ_{t+1} = D(X̂_{t+1})                       decoder (nearest ×2 upsample → conv 7×7, no nonlinearity)
    loss = Σ_{t ≥ burn_in} ‖Ŷ_{t+1} − Y_{t+1}‖² + w_H · Huber_δ(|∇T_t|)

Presets (``preset``; every other argument left ``None`` takes the preset's value):

=========  ====================================================================================
paper      E 16 filters 7×7 + tanh + max-pool; ConvLSTM 64 hidden 7×7, forget bias 1; flow head
           15×15 → 15×15 → 1×1 (zero init), normalised displacement clamped to ±0.5; warp the
           features; pixel MSE on every step ≥ burn_in + Huber smoothness (δ 1e-3, w 1e-2).
           ≈ 1.035 M parameters at in_channels=1.
code       the released Torch7 code: E 32 filters, ConvLSTM 45 hidden, forget bias 0, untied first
           step; MSE of image gradients on the last frame only; smoothness off (commented out in
           flow.lua). Train with RMSProp 1e-4 and elementwise gradient clipping ±50 (recipe).
modern     §8.4: E 2 stages 3×3 GroupNorm+ReLU (stride 4), ConvLSTM 3×3 with GroupNorm on the gates;
           coarse-to-fine flow (1/4 → 1/2 → 1, flow ×2 + residual per scale, no clamp); warps the
           raw frame t in pixel space (border padding); data term 0.15·L1 + 0.85·SSIM (or
           Charbonnier) at every scale; edge-aware 1st-order smoothness (α 10); optional occlusion
           mask: ``outside`` (source outside the frame) or ``fb`` (a second head forecasts the
           forward flow; forward–backward consistency check, UnFlow thresholds).
=========  ====================================================================================

The modern recipes (``recipes/base/model/flow_ae_modern.yaml``) also set ``recon: charbonnier`` and
the encoder's ``motion_input`` (E sees Y_t and 8·(Y_t − Y_{t−1})): with L1 + SSIM on frames alone the
modern variant did not learn the synthetic set's ~1 px/frame motions (BENCHMARKS.md).

Flow conventions: every flow this module returns is the **backward** flow B_{t+1→t} at the pixels
of frame t+1, in pixels of the input frame, channel 0 = dx, 1 = dy — the convention of
``flow.npz['backward']`` of the synthetic set, so no sign flip or channel swap is needed to compare.

``module.encoder`` (:class:`~videossl.models.convlstm.FlowEncoder`) = E + ConvLSTM: called on a clip
(B, C, T, H, W) it returns the pooled hidden state (B, feature_dim), for linear probes. Online use:
:meth:`FlowAutoencoder.init_state` and :meth:`FlowAutoencoder.step` (one frame at a time).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from videossl.core.optim import OptimConfig
from videossl.data.loader.batch import to_clip
from videossl.errors import VideosslError
from videossl.losses import photometric as P
from videossl.methods.base import SSLMethod
from videossl.models.convlstm import FlowEncoder
from videossl.models.heads import Decoder, MultiScaleFlowHead, PaperFlowHead
from videossl.models.warp import (
    backward_warp,
    backward_warp_norm,
    flow_norm_to_px,
    flow_px_to_norm,
    outside_mask,
    upsample_flow,
)

MODES = ("forecast", "pair")
@dataclass(frozen=True)
class FlowAEConfig:
    """The method-side settings of one variant (what a preset fixes and an init argument overrides)."""

    head: str  # "paper" (features warped at stride 2, clamped) | "multiscale" (pixel space, coarse to fine)
    flow_kernel_size: int
    clamp: float
    recon: str
    loss_last_only: bool
    smooth: str
    smooth_weight: float
    occlusion: str


METHOD_PRESETS: dict[str, FlowAEConfig] = {
    "paper": FlowAEConfig(head="paper", flow_kernel_size=15, clamp=0.5, recon="pixel", loss_last_only=False,
                          smooth="huber", smooth_weight=1e-2, occlusion="none"),
    "code": FlowAEConfig(head="paper", flow_kernel_size=15, clamp=0.5, recon="gradient", loss_last_only=True,
                         smooth="huber", smooth_weight=0.0, occlusion="none"),
    "modern": FlowAEConfig(head="multiscale", flow_kernel_size=3, clamp=0.0, recon="l1_ssim", loss_last_only=False,
                           smooth="edge", smooth_weight=0.1, occlusion="outside"),
}

#: data terms: (prediction, target, mask or None) → scalar. A new term is one function and one entry.
DATA_TERMS: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]] = {
    "pixel": lambda pred, target, mask: P.mse(pred, target, mask),
    "gradient": lambda pred, target, mask: P.gradient_mse(pred, target),
    "charbonnier": lambda pred, target, mask: P.charbonnier(pred, target, mask=mask),
    "l1_ssim": lambda pred, target, mask: P.l1_ssim(pred, target, mask=mask),
}

RECONS = tuple(DATA_TERMS)
SMOOTHS = ("huber", "edge", "none")
OCCLUSIONS = ("none", "outside", "fb")


class FlowAutoencoder(SSLMethod):
    """The flow autoencoder as an :class:`SSLMethod` (views: one clip of T frames, ``views[0]``).

    Args:
        encoder: a :class:`~videossl.models.convlstm.FlowEncoder` (E + ConvLSTM); ``None`` builds
            one from ``preset`` and ``in_channels``. It becomes ``self.encoder``.
        preset: ``paper`` | ``code`` | ``modern`` (default: the encoder's preset).
        in_channels: only used when ``encoder`` is None (1 = grey: RGB views are converted).
        flow_kernel_size, clamp: flow head kernel (paper 15); clamp of the normalised displacement
            (paper 0.5; 0 = off).
        recon: ``pixel`` (MSE) | ``gradient`` (MSE of image gradients) | ``charbonnier`` | ``l1_ssim``.
        loss_last_only: reconstruction of the last frame only (released code).
        smooth, smooth_weight, huber_delta, edge_alpha, smooth_order: smoothness term.
        occlusion: ``none`` | ``outside`` | ``fb`` (modern only).
        scale_weights: per-scale data-term weights, fine → coarse (modern; default 1, 0.5, 0.25, …).
        align_corners: sampler convention (True = the paper's stnbhwd); set explicitly everywhere.
        burn_in: steps without a loss (default: the encoder's burn_in, 1).
        mode: ``forecast`` (the paper: the flow B_{t+1→t} comes from the memory h_t, which has seen
            frames ≤ t only) or ``pair`` (a diagnostic *estimator*: the flow comes from h_{t+1}, which
            has also seen frame t+1; the prediction is still frame t warped, so the flow is the only
            path to frame t+1). ``pair`` separates "cannot estimate motion" from "cannot forecast it".
    """

    def __init__(
        self,
        encoder: nn.Module | None = None,
        preset: str | None = None,
        in_channels: int | None = None,
        flow_kernel_size: int | None = None,
        clamp: float | None = None,
        recon: str | None = None,
        loss_last_only: bool | None = None,
        smooth: str | None = None,
        smooth_weight: float | None = None,
        huber_delta: float = 1e-3,
        edge_alpha: float = 10.0,
        smooth_order: int = 1,
        occlusion: str | None = None,
        scale_weights: list[float] | None = None,
        align_corners: bool = True,
        optim: OptimConfig | None = None,
        num_classes: int = 0,
        probe_lr: float = 1e-2,
        compile: bool | dict[str, Any] = False,
        channels_last: bool = False,
        mode: str = "forecast",
    ) -> None:
        super().__init__(optim=optim, num_classes=num_classes, probe_lr=probe_lr,
                         compile=compile, channels_last=channels_last)
        if mode not in MODES:
            raise VideosslError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode
        if encoder is None:
            encoder = FlowEncoder(preset=preset or "paper", in_channels=in_channels or 1)
        if not isinstance(encoder, FlowEncoder):
            raise VideosslError("the flow autoencoder needs a videossl.models.convlstm.FlowEncoder, "
                                f"got {type(encoder).__name__}")
        if in_channels is not None and in_channels != encoder.in_channels:
            raise VideosslError(f"in_channels={in_channels} but the encoder takes {encoder.in_channels} channel(s)")
        preset = preset or encoder.preset
        if preset not in METHOD_PRESETS:
            raise VideosslError(f"unknown flow autoencoder preset {preset!r}: choose one of {', '.join(METHOD_PRESETS)}")
        overrides = dict(flow_kernel_size=flow_kernel_size, clamp=clamp, recon=recon, loss_last_only=loss_last_only,
                         smooth=smooth, smooth_weight=smooth_weight, occlusion=occlusion)
        cfg = dataclasses.replace(METHOD_PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None})
        if cfg.recon not in RECONS:
            raise VideosslError(f"recon must be one of {', '.join(RECONS)}, got {cfg['recon']!r}")
        if cfg.smooth not in SMOOTHS:
            raise VideosslError(f"smooth must be one of {', '.join(SMOOTHS)}, got {cfg['smooth']!r}")
        if cfg.occlusion not in OCCLUSIONS:
            raise VideosslError(f"occlusion must be one of {', '.join(OCCLUSIONS)}, got {cfg['occlusion']!r}")
        if cfg.head == "paper" and cfg.occlusion != "none":
            raise VideosslError("occlusion masks need the modern (pixel-space, multi-scale) variant")
        if cfg.head == "paper" and encoder.stride != 2:
            raise VideosslError(f"the {preset} preset warps features at stride 2; this encoder has stride {encoder.stride}")
        self.encoder = encoder
        self.preset, self.cfg = preset, cfg
        self.align_corners = bool(align_corners)
        self.huber_delta, self.edge_alpha, self.smooth_order = float(huber_delta), float(edge_alpha), int(smooth_order)
        self.burn_in = encoder.burn_in
        self.pixel_space = cfg.head == "multiscale"
        if self.pixel_space:
            self.flow_head = MultiScaleFlowHead(encoder.hidden_channels, encoder.channels, encoder.in_channels,
                                                directions=2 if cfg.occlusion == "fb" else 1, k=cfg.flow_kernel_size)
            self.decoder = None
            n = len(encoder.channels) + 1
            self.scale_weights = list(scale_weights) if scale_weights else [0.5 ** i for i in range(n)]
            if len(self.scale_weights) != n:
                raise VideosslError(f"scale_weights needs {n} values (fine → coarse), got {len(self.scale_weights)}")
        else:
            self.flow_head = PaperFlowHead(encoder.hidden_channels, cfg.flow_kernel_size)
            self.decoder = Decoder(encoder.out_channels, encoder.in_channels, encoder.stride, encoder.config["kernel_size"])
            self.scale_weights = [1.0]
        self._build_probe()

    # ------------------------------------------------------------------------------ flow pieces
    def _paper_flow(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h (N, C_h, h, w) → (normalised clamped displacement, same in memory-grid pixels)."""
        norm = flow_px_to_norm(self.flow_head(h).float(), self.align_corners)
        if self.cfg.clamp and self.cfg.clamp > 0:
            norm = norm.clamp(-self.cfg.clamp, self.cfg.clamp)
        return norm, flow_norm_to_px(norm, self.align_corners)

    def _predict(self, frame: torch.Tensor, pyramid: list[torch.Tensor], h: torch.Tensor) -> dict[str, Any]:
        """One forecast for N (frame t, features of frame t, h_t) → prediction of frame t+1 and its flows."""
        H, W = frame.shape[-2:]
        if not self.pixel_space:
            norm, px_mem = self._paper_flow(h)
            xhat = backward_warp_norm(pyramid[-1], norm, self.align_corners, padding_mode="zeros")
            pred = self.decoder(xhat)
            return {"pred": pred, "flow": upsample_flow(px_mem, (H, W)), "flow_norm": norm}
        feats = list(reversed([frame] + pyramid[:-1]))
        flows = self.flow_head(h, feats)  # coarse → fine
        bwd = [f[:, :2] for f in flows]
        pred = backward_warp(frame, bwd[-1], self.align_corners, padding_mode="border")
        out = {"pred": pred, "flow": bwd[-1], "flows": bwd}
        if self.cfg.occlusion == "fb":
            out["flows_fwd"] = [f[:, 2:] for f in flows]
        return out

    # ------------------------------------------------------------------------------ whole clips
    def forecast(self, clip: torch.Tensor) -> dict[str, Any]:
        """Run a clip (B, C, T, H, W) in [0, 1]; forecasts for steps t = burn_in … T−2.

        Returns ``pred`` (B, n, C', H, W) = Ŷ_{t+1}, ``target`` (B, n, C', H, W) = Y_{t+1},
        ``source`` = Y_t, ``flow`` (B, n, 2, H, W) backward flow B_{t+1→t} in px (dx, dy),
        ``steps`` (the t of each forecast), ``h``/``c`` (B, T, C_h, h, w) and the per-scale flows.
        C' is the model's channel count (1 when RGB was converted to grey).
        """
        enc = self.encoder
        clip = enc.prepare(clip)
        B, C, T, H, W = clip.shape
        enc.check_length(T, self.burn_in + 2, "a forecast (burn-in steps, then frame t and frame t+1)")
        frames = clip.permute(0, 2, 1, 3, 4)  # (B, T, C, H, W)
        inputs = enc.frame_inputs(frames)
        pyr = [p.view(B, T, *p.shape[1:]) for p in enc.spatial(inputs.reshape(B * T, *inputs.shape[2:]))]
        hs, cs, _ = enc.memory(pyr[-1])
        steps = list(range(self.burn_in, T - 1))
        n = len(steps)

        def sel(x: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
            return x[:, lo:hi].reshape(B * n, *x.shape[2:])

        lag = 1 if self.mode == "pair" else 0  # pair: the memory has also seen frame t+1
        out = self._predict(sel(frames, steps[0], T - 1), [sel(p, steps[0], T - 1) for p in pyr],
                            sel(hs, steps[0] + lag, T - 1 + lag))
        res: dict[str, Any] = {k: v for k, v in out.items()}
        res["pred"] = out["pred"].view(B, n, C, H, W)
        res["flow"] = out["flow"].view(B, n, 2, H, W)
        res["source"] = frames[:, steps[0]:T - 1]
        res["target"] = frames[:, steps[0] + 1:]
        res["steps"] = steps
        res["h"], res["c"] = hs, cs
        res["batch"] = B
        return res

    def features_from_states(self, hs: torch.Tensor, cs: torch.Tensor) -> torch.Tensor:
        enc = self.encoder
        if enc.pool == "last":
            return enc.pooled(hs[:, -1], cs[:, -1])
        return enc.pooled(hs[:, enc.burn_in:], cs[:, enc.burn_in:]).mean(1)

    # ------------------------------------------------------------------------------ losses
    def _data_term(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return DATA_TERMS[self.cfg.recon](pred, target, mask)

    def loss_terms(self, res: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Reconstruction and smoothness terms of a :meth:`forecast` result."""
        B, n = res["pred"].shape[:2]
        src = res["source"].reshape(B * n, *res["source"].shape[2:])
        tgt = res["target"].reshape(B * n, *res["target"].shape[2:])
        pred = res["pred"].reshape(B * n, *res["pred"].shape[2:])
        keep = slice(None)
        if self.cfg.loss_last_only:
            keep = torch.arange(B, device=pred.device) * n + (n - 1)
        terms: dict[str, torch.Tensor] = {}
        if not self.pixel_space:
            terms["recon"] = self._data_term(pred[keep], tgt[keep])
            if self.cfg.smooth == "huber":
                terms["smooth"] = P.huber_smooth(res["flow_norm"][keep], self.huber_delta)
            elif self.cfg.smooth == "edge":
                flow = res["flow"].flatten(0, 1)[keep]
                terms["smooth"] = P.edge_aware_smoothness(flow, tgt[keep], self.edge_alpha, self.smooth_order)
            return terms
        recon = pred.new_zeros(())
        flows = res["flows"]
        fwd = res.get("flows_fwd")
        for level, flow in enumerate(reversed(flows)):  # fine → coarse
            w = self.scale_weights[level]
            s = 2 ** level
            a = F.avg_pool2d(src, s) if s > 1 else src
            b = F.avg_pool2d(tgt, s) if s > 1 else tgt
            fl = flow[keep]
            warped = backward_warp(a[keep], fl, self.align_corners, padding_mode="border")
            mask = None
            occ = self.cfg.occlusion
            if occ == "outside":
                mask = outside_mask(fl)
            elif occ == "fb":
                ff = fwd[len(flows) - 1 - level][keep]
                mask = P.forward_backward_occlusion(fl, backward_warp(ff, fl, self.align_corners, padding_mode="border"))
                mask_f = P.forward_backward_occlusion(ff, backward_warp(fl, ff, self.align_corners, padding_mode="border"))
                warped_f = backward_warp(b[keep], ff, self.align_corners, padding_mode="border")
                recon = recon + w * self._data_term(warped_f, a[keep], mask_f.detach())
                mask = mask.detach()
            recon = recon + w * self._data_term(warped, b[keep], mask)
        terms["recon"] = recon
        if self.cfg.smooth == "edge":
            sm = P.edge_aware_smoothness(flows[-1][keep], tgt[keep], self.edge_alpha, self.smooth_order)
            if fwd is not None:
                sm = sm + P.edge_aware_smoothness(fwd[-1][keep], src[keep], self.edge_alpha, self.smooth_order)
            terms["smooth"] = sm
        elif self.cfg.smooth == "huber":
            terms["smooth"] = P.huber_smooth(flow_px_to_norm(flows[-1][keep], self.align_corners), self.huber_delta)
        return terms

    def total_loss(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        loss = terms["recon"]
        if "smooth" in terms and self.cfg.smooth_weight:
            loss = loss + self.cfg.smooth_weight * terms["smooth"]
        return loss

    # ------------------------------------------------------------------------------ SSLMethod
    def ssl_step(self, batch: dict[str, Any]):
        res = self.forecast(to_clip(batch["views"][0]))
        terms = self.loss_terms(res)
        loss = self.total_loss(terms)
        feats = self.features_from_states(res["h"], res["c"])
        with torch.no_grad():
            B, n = res["pred"].shape[:2]
            pred = res["pred"].flatten(0, 1).clamp(0, 1)
            psnr = P.psnr(pred, res["target"].flatten(0, 1)).mean()
            psnr_copy = P.psnr(res["source"].flatten(0, 1), res["target"].flatten(0, 1)).mean()
            mag = res["flow"].norm(dim=2).mean()
        logs = {**{k: v.detach() for k, v in terms.items()}, "psnr": psnr, "psnr_copy": psnr_copy, "flow_mag": mag}
        return loss, feats, logs

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)
        clip = to_clip(batch["views"][0])
        if clip.shape[2] < self.burn_in + 2:
            return
        keep = ~batch["duplicate"] if "duplicate" in batch else slice(None)
        res = self.forecast(clip[keep])
        if res["pred"].shape[0] == 0:
            return
        bs = res["pred"].shape[0]
        loss = self.total_loss(self.loss_terms(res))
        psnr = P.psnr(res["pred"].flatten(0, 1).clamp(0, 1), res["target"].flatten(0, 1)).mean()
        psnr_copy = P.psnr(res["source"].flatten(0, 1), res["target"].flatten(0, 1)).mean()
        self.log("val/loss", loss, on_epoch=True, batch_size=bs, sync_dist=True)
        self.log("val/psnr", psnr, on_epoch=True, prog_bar=True, batch_size=bs, sync_dist=True)
        self.log("val/psnr_copy", psnr_copy, on_epoch=True, batch_size=bs, sync_dist=True)

    # ------------------------------------------------------------------------------ streaming
    def init_state(self, batch: dict[str, Any] | torch.Tensor | None = None) -> dict[str, Any]:
        """Fresh memory (h_0 = c_0 = 0) for an online run; ``batch`` is accepted for symmetry and unused
        (shapes are taken from the first frame given to :meth:`step`)."""
        return {"memory": None, "t": 0, "previous": None}

    def step(self, frame: torch.Tensor, state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Consume frame t (B, C, H, W) in [0, 1]; forecast frame t+1.

        Returns ``(out, new_state)``; ``out`` has ``pred`` (B, C', H, W) = Ŷ_{t+1}, ``flow``
        (B, 2, H, W) backward flow B_{t+1→t} in px, ``features`` (B, D) (pooled h_t, c_t), ``t``
        and ``valid`` (False during the burn-in: the memory is still empty and the forecast unreliable).
        """
        if frame.ndim != 4:
            raise VideosslError(f"step() takes one frame (B, C, H, W), got shape {tuple(frame.shape)}")
        if self.mode != "forecast":
            raise VideosslError("step() streams forecasts; a mode='pair' model estimates flow between given frames: "
                                "use forecast(clip)")
        x = self.encoder.prepare(frame[:, :, None])[:, :, 0]
        pyr = self.encoder.spatial(self.encoder.frame_inputs(x[:, None], state.get("previous"))[:, 0])
        h, c, memory = self.encoder.memory.step(pyr[-1], state.get("memory"))
        out = self._predict(x, pyr, h)
        t = int(state.get("t", 0))
        res = {"pred": out["pred"], "flow": out["flow"], "features": self.encoder.pooled(h, c), "t": t,
               "valid": t >= self.burn_in}
        return res, {"memory": memory, "t": t + 1, "previous": x}

    def count_parameters(self) -> int:
        """Parameters of the autoencoder (encoder, flow head, decoder), online probe excluded."""
        return sum(p.numel() for n, p in self.named_parameters() if not n.startswith("online_probe."))


__all__ = ["DATA_TERMS", "FlowAEConfig", "FlowAutoencoder", "METHOD_PRESETS", "MODES"]
