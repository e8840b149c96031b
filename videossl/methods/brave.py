"""BraVe: Broaden your Views for self-supervised video learning (Recasens et al., ICCV 2021).

Two views of one video, each with its own backbone: a *narrow* view (short clip, high resolution)
and a *broad* view (long clip, low resolution; RGB, RandConv RGB, or frame differences as a
second modality). Each side has a projector and a predictor; each side's prediction regresses the
other side's projection (stop-gradient), in both directions; the loss is the plain mean of the
terms. No EMA target, no negatives. The encoder kept for evaluation is the narrow backbone:
``module.encoder``. See Recasens et al., arXiv:2103.16559.

Batches come from the shared pipeline with two views named ``narrow`` and ``broad`` (the BraVe sampler pair).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from videossl.core.optim import OptimConfig
from videossl.data.loader.batch import to_clip, view, view_indices
from videossl.errors import VideosslError
from videossl.losses.regression import brave_loss
from videossl.methods.base import SSLMethod
from videossl.models.flow_estimate import check_estimator, estimate_flow
from videossl.models.heads import predictor, projector
from videossl.models.motion import frame_differences, gray_differences
from videossl.models.randconv import RandConv


def flow_view(flow: torch.Tensor, indices: torch.Tensor, size: int, scale: float = 2.0) -> torch.Tensor:
    """Optical-flow broad view: ``flow`` (B, T-1, H, W, 2) px (dx, dy) of the whole video, ``indices``
    (B, Tb) the broad view's frames → (B, 2, Tb, size, size), resized (vectors rescaled with the
    image) and divided by ``scale`` px. Frame t gets the flow t→t+1 (the last frame the previous)."""
    b, tf, h, w, _ = flow.shape
    idx = indices.long().clamp(max=tf - 1).to(flow.device)
    f = torch.gather(flow, 1, idx[:, :, None, None, None].expand(-1, -1, h, w, 2))  # (B, Tb, H, W, 2)
    f = f.permute(0, 1, 4, 2, 3).reshape(-1, 2, h, w).float()
    f = torch.nn.functional.interpolate(f, size=(size, size), mode="bilinear", align_corners=False)
    f = f * f.new_tensor([size / w, size / h]).view(1, 2, 1, 1) / scale
    return f.reshape(b, -1, 2, size, size).permute(0, 2, 1, 3, 4).contiguous()


class BraVe(SSLMethod):
    """BraVe with one broad modality.

    Args:
        narrow_encoder: backbone of the narrow view; becomes ``self.encoder``.
        broad_encoder: backbone of the broad view (own weights; its ``in_channels`` must match the
            modality: 3 for rgb / randconv / frame_diff, 1 for gray_diff).
        broad_modality: ``rgb``, ``randconv`` (a random convolution per clip, as BraVe's code
            does for every broad video view) or ``frame_diff`` (temporal differences: a cheap
            motion modality computed on the fly), ``gray_diff`` (the same on the luma, one
            channel), or ``flow`` (BraVe's V/F: optical flow of the broad window, 2 channels; here
            the flow stored with the data, e.g. the synthetic set's ground truth via
            ``data.extras: [flow.npz]``, an oracle), or ``flow_est`` (the same V/F with the flow
            estimated from the broad view's own frames, no ground truth: :mod:`videossl.models.flow_estimate`).
        flow_estimator, flow_estimator_opts: the estimator of ``flow_est`` (``farneback``, ``dis``,
            ``raft``) and its options (e.g. ``{arch: raft_small, weights: C_T_V2}``).
        proj_hidden, out_dim, pred_hidden: head sizes (paper: 4096, 128, 4096).
        optim: optimiser/schedule (paper: LARS, nesterov, wd 1e-2, predictor gradients x10).
        num_classes: > 0 adds the online linear probe on detached narrow features.
    """

    encoder_arg = "narrow_encoder"
    speed_modules = ("encoder", "broad_encoder")
    encoder_view = "narrow"

    def __init__(
        self,
        narrow_encoder: nn.Module,
        broad_encoder: nn.Module,
        broad_modality: str = "rgb",
        proj_hidden: int = 4096,
        out_dim: int = 128,
        pred_hidden: int = 4096,
        optim: OptimConfig | None = None,
        num_classes: int = 0,
        probe_lr: float = 1e-2,
        compile: bool | dict[str, Any] = False,
        channels_last: bool = False,
        seed: int = 0,
        flow_estimator: str = "farneback",
        flow_estimator_opts: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(optim=optim, num_classes=num_classes, probe_lr=probe_lr, seed=seed,
                         compile=compile, channels_last=channels_last)
        if broad_modality not in BROAD_INPUTS:
            raise VideosslError(f"unknown broad_modality {broad_modality!r}: choose one of {', '.join(BROAD_INPUTS)}")
        self.encoder = narrow_encoder
        self.broad_encoder = broad_encoder
        self.broad_modality = broad_modality
        check_estimator(flow_estimator, flow_estimator_opts)
        self.flow_estimator, self.flow_estimator_opts = flow_estimator, dict(flow_estimator_opts or {})
        self.randconv = RandConv() if broad_modality == "randconv" else None
        dn, db = narrow_encoder.feature_dim, broad_encoder.feature_dim
        self.narrow_projector = projector(dn, proj_hidden, out_dim)
        self.narrow_predictor = predictor(out_dim, pred_hidden, out_dim)
        self.broad_projector = projector(db, proj_hidden, out_dim)
        self.broad_predictor = predictor(out_dim, pred_hidden, out_dim)
        self._build_probe()

    def broad_input(self, clip: torch.Tensor, batch: dict[str, Any] | None = None) -> torch.Tensor:
        """The broad view's clip turned into the broad modality (:data:`BROAD_INPUTS`)."""
        return BROAD_INPUTS[self.broad_modality](self, clip, batch)

    def ssl_step(self, batch: dict[str, Any]):
        narrow, broad = view(batch, "narrow"), view(batch, "broad")
        f_n = self.encoder(to_clip(narrow))
        f_b = self.broad_encoder(self.broad_input(to_clip(broad), batch))
        z_n = self.narrow_projector(f_n)
        p_n = self.narrow_predictor(z_n)
        z_b = self.broad_projector(f_b)
        p_b = self.broad_predictor(z_b)
        # broad predicts narrow, narrow predicts broad; targets are detached inside brave_loss
        loss = brave_loss([(p_b, z_n), (p_n, z_b)])
        with torch.no_grad():
            std = torch.nn.functional.normalize(z_n.float(), dim=1).std(0).mean()  # collapse monitor
        return loss, f_n, {"z_std": std}


def _flow_input(method: BraVe, clip: torch.Tensor, batch: dict[str, Any] | None) -> torch.Tensor:
    if batch is None or "flow" not in batch:
        raise VideosslError("broad_modality 'flow' needs the flow in the batch: set data.extras: [flow.npz] "
                            "(the synthetic set stores ground-truth flow)")
    return flow_view(batch["flow"]["forward"], batch["indices"][view_indices(batch, "broad")[0]], clip.shape[-1])


def _flow_est_input(method: BraVe, clip: torch.Tensor, batch: dict[str, Any] | None) -> torch.Tensor:
    # flow between the broad view's consecutive frames (at a stride > 1 that spans `stride` source frames)
    flow = estimate_flow(clip.detach(), method.flow_estimator, **method.flow_estimator_opts)
    return flow_view(flow, torch.arange(clip.shape[2]).expand(clip.shape[0], -1), clip.shape[-1])


#: broad modality → (method, broad clip (B, 3, T, H, W), batch) → the broad backbone's input.
#: A new modality is one function and one entry here (its channel count is the broad encoder's in_channels).
BROAD_INPUTS: dict[str, Callable[[BraVe, torch.Tensor, dict[str, Any] | None], torch.Tensor]] = {
    "rgb": lambda method, clip, batch: clip,
    "randconv": lambda method, clip, batch: method.randconv(clip, generator=method.step_generator()),
    "frame_diff": lambda method, clip, batch: frame_differences(clip),
    "gray_diff": lambda method, clip, batch: gray_differences(clip),
    "flow": _flow_input,
    "flow_est": _flow_est_input,
}
