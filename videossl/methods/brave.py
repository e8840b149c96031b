"""BraVe: Broaden your Views for self-supervised video learning (Recasens et al., ICCV 2021).

Two views of one video, each with its own backbone: a *narrow* view (short clip, high resolution)
and a *broad* view (long clip, low resolution; RGB, RandConv RGB, frame differences, optical flow or the
sound of the window as a second modality, or several of these at once: V/AF). Each side has a
projector and a predictor; each side's prediction regresses the other side's projection
(stop-gradient), in both directions; the loss is the plain mean of the terms (2 per broad modality).
No EMA target, no negatives. The encoder kept for evaluation is the narrow backbone:
``module.encoder``. See Recasens et al., arXiv:2103.16559.

Batches come from the shared pipeline with two views named ``narrow`` and ``broad`` (the BraVe sampler pair).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import nn

from videossl.core.optim import OptimConfig
from videossl.data.loader.batch import to_clip, view, view_indices
from videossl.errors import VideosslError
from videossl.losses.regression import brave_terms
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


class Branch(NamedTuple):
    """One broad modality of a BraVe model: its backbone and the two heads of its term pair (arXiv:2103.16559
    §3; deepmind/brave ``_build_loss_fn``): the narrow head ``n_video_to_b_<m>`` and the broad head
    ``b_<m>_to_n_video``, each a projector + predictor."""

    modality: str
    encoder: nn.Module
    narrow_projector: nn.Module
    narrow_predictor: nn.Module
    broad_projector: nn.Module
    broad_predictor: nn.Module


class BraVe(SSLMethod):
    """BraVe with one broad modality, or several (V/AF: audio and flow, each with its own backbone and head pair).

    Args:
        narrow_encoder: backbone of the narrow view; becomes ``self.encoder``.
        broad_encoder: backbone of the broad view (own weights; its ``in_channels`` must match the
            modality: 3 for rgb / randconv / frame_diff, 1 for gray_diff, 2 for flow, the spectrogram's
            channels for audio).
        broad_modality: ``rgb`` (the default), ``randconv`` (a random convolution per clip, as BraVe's code
            does for every broad video view) or ``frame_diff`` (temporal differences: a cheap
            motion modality computed on the fly), ``gray_diff`` (the same on the luma, one
            channel), ``flow`` (BraVe's V/F: optical flow of the broad window, 2 channels; here
            the flow stored with the data, e.g. the synthetic set's ground truth via
            ``data.extras: [flow.npz]``, an oracle), ``flow_est`` (the same V/F with the flow
            estimated from the broad view's own frames, no ground truth: :mod:`videossl.models.flow_estimate`),
            ``audio`` (BraVe's V/A: the log-mel spectrogram of the broad window, ``data.audio``), or ``audio_diff``
            (its differences from one STFT frame to the next: the audio twin of ``frame_diff``; not in the paper).
        broad_encoders: several broad modalities instead of one (``broad_encoder`` and ``broad_modality`` then
            null): ``{modality: backbone}``, e.g. ``{audio: <audio-small>, flow_est: <Small3D in_channels 2>}``
            for V/AF. Each modality gets its own backbone and its own pair of heads (narrow → broad and
            broad → narrow), and the loss is the plain mean of all 2·M terms.
        broad_modalities: the order of ``broad_encoders``' modalities (their keys, checked; default: the
            keys' order). The loss terms are logged by name: ``train/b_<m>_to_n_video``, ``train/n_video_to_b_<m>``.
        flow_estimator, flow_estimator_opts: the estimator of ``flow_est`` (``farneback``, ``dis``,
            ``raft``) and its options (e.g. ``{arch: raft_small, weights: C_T_V2}``).
        proj_hidden, out_dim, pred_hidden: head sizes (paper: 4096, 128, 4096).
        optim: optimiser/schedule (paper: LARS, nesterov, wd 1e-2, predictor gradients x10).
        num_classes: > 0 adds the online linear probe on detached narrow features.

    Samples given silence for a missing audio track (``data.audio.missing: silence``, ``batch["has_audio"]``
    false) are left out of the audio terms' means.
    """

    encoder_arg = "narrow_encoder"
    speed_modules = ("encoder", "broad_encoder", "broad_encoders")
    encoder_view = "narrow"

    def __init__(
        self,
        narrow_encoder: nn.Module,
        broad_encoder: nn.Module | None = None,
        broad_modality: str | None = None,
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
        broad_encoders: dict[str, nn.Module] | None = None,
        broad_modalities: list[str] | None = None,
    ) -> None:
        super().__init__(optim=optim, num_classes=num_classes, probe_lr=probe_lr, seed=seed,
                         compile=compile, channels_last=channels_last)
        modalities = _check_broad(broad_encoder, broad_modality, broad_encoders, broad_modalities)
        self.encoder = narrow_encoder
        self.broad_modalities = modalities
        check_estimator(flow_estimator, flow_estimator_opts)
        self.flow_estimator, self.flow_estimator_opts = flow_estimator, dict(flow_estimator_opts or {})
        dn = narrow_encoder.feature_dim
        self.broad_encoder: nn.Module | None = None
        self.broad_encoders: nn.ModuleDict | None = None
        if broad_encoders is None:  # one broad modality: the module names (and order) of every earlier checkpoint
            self.broad_modality = modalities[0]
            self.broad_encoder = broad_encoder
            self.randconv = RandConv() if "randconv" in modalities else None
            self.narrow_projector = projector(dn, proj_hidden, out_dim)
            self.narrow_predictor = predictor(out_dim, pred_hidden, out_dim)
            self.broad_projector = projector(broad_encoder.feature_dim, proj_hidden, out_dim)
            self.broad_predictor = predictor(out_dim, pred_hidden, out_dim)
        else:  # several: one backbone and one head pair per modality, keyed by the modality
            self.broad_encoders = nn.ModuleDict({m: broad_encoders[m] for m in modalities})
            self.randconv = RandConv() if "randconv" in modalities else None
            self.narrow_projectors, self.narrow_predictors = nn.ModuleDict(), nn.ModuleDict()
            self.broad_projectors, self.broad_predictors = nn.ModuleDict(), nn.ModuleDict()
            for m in modalities:
                self.narrow_projectors[m] = projector(dn, proj_hidden, out_dim)
                self.narrow_predictors[m] = predictor(out_dim, pred_hidden, out_dim)
                self.broad_projectors[m] = projector(self.broad_encoders[m].feature_dim, proj_hidden, out_dim)
                self.broad_predictors[m] = predictor(out_dim, pred_hidden, out_dim)
        self._build_probe()

    @classmethod
    def encoder_parts(cls, init_args: dict[str, Any]) -> dict[str, tuple[str, str]]:
        """The narrow backbone as ``video``, each broad backbone by its modality (``audio``, ``flow_est``, …)."""
        parts = {"video": (cls.encoder_arg, "encoder.")}
        if isinstance(init_args.get("broad_encoders"), dict):
            parts.update({m: (f"broad_encoders.{m}", f"broad_encoders.{m}.") for m in init_args["broad_encoders"]})
        else:
            parts[init_args.get("broad_modality") or "rgb"] = ("broad_encoder", "broad_encoder.")
        return parts

    def branches(self) -> list[Branch]:
        """The broad modalities with their backbone and heads, in order."""
        if self.broad_encoders is None:
            return [Branch(self.broad_modality, self.broad_encoder, self.narrow_projector, self.narrow_predictor,
                           self.broad_projector, self.broad_predictor)]
        return [Branch(m, self.broad_encoders[m], self.narrow_projectors[m], self.narrow_predictors[m],
                       self.broad_projectors[m], self.broad_predictors[m]) for m in self.broad_modalities]

    def broad_input(self, clip: torch.Tensor, batch: dict[str, Any] | None = None, modality: str | None = None) -> torch.Tensor:
        """The broad view's clip turned into a broad modality (:data:`BROAD_INPUTS`; default: the first)."""
        return BROAD_INPUTS[modality or self.broad_modalities[0]](self, clip, batch)

    def shuffle_pairs(self, batch: dict[str, Any], perm: torch.Tensor) -> dict[str, Any]:
        """The batch with its broad side (the broad clip; the spectrogram for audio; the ground-truth flow the
        flow view reads) permuted across samples by ``perm``, the narrow side untouched."""
        out = dict(batch)
        if "spectrogram" in batch:
            out["spectrogram"] = batch["spectrogram"][perm]
            if "has_audio" in batch:
                out["has_audio"] = batch["has_audio"][perm]
        broad = set(view_indices(batch, "broad"))
        out["views"] = [v[perm] if i in broad else v for i, v in enumerate(batch["views"])]
        if isinstance(batch.get("valid"), list | tuple):
            out["valid"] = [m[perm] if i in broad and m is not None else m for i, m in enumerate(batch["valid"])]
        if "flow" in batch:
            out["flow"] = {k: v[perm] for k, v in batch["flow"].items()}
        return out

    def ssl_step(self, batch: dict[str, Any]):
        narrow, broad = view(batch, "narrow"), view(batch, "broad")
        f_n = self.encoder(to_clip(narrow))
        clip_b = to_clip(broad)
        terms: dict[str, tuple] = {}
        z_n0 = None
        for br in self.branches():
            f_b = br.encoder(self.broad_input(clip_b, batch, br.modality))
            z_n = br.narrow_projector(f_n)
            p_n = br.narrow_predictor(z_n)
            z_b = br.broad_projector(f_b)
            p_b = br.broad_predictor(z_b)
            mask = _audio_mask(batch) if br.modality.startswith("audio") else None
            # broad predicts narrow, narrow predicts broad; targets are detached inside brave_terms
            terms[f"b_{br.modality}_to_n_video"] = (p_b, z_n, mask)
            terms[f"n_video_to_b_{br.modality}"] = (p_n, z_b, mask)
            z_n0 = z_n if z_n0 is None else z_n0
        values = brave_terms(terms)
        loss = torch.stack(list(values.values())).mean()
        with torch.no_grad():
            std = torch.nn.functional.normalize(z_n0.float(), dim=1).std(0).mean()  # collapse monitor
        return loss, f_n, {"z_std": std, **{k: v.detach() for k, v in values.items()}}


def _check_broad(broad_encoder: nn.Module | None, broad_modality: str | None, broad_encoders: dict[str, nn.Module] | None,
                 broad_modalities: list[str] | None) -> list[str]:
    """The broad modalities of a BraVe model, its arguments checked (one line per mistake)."""
    if (broad_encoder is None) == (broad_encoders is None):
        raise VideosslError("BraVe needs either broad_encoder (+ broad_modality) for one broad view, or broad_encoders "
                            "({modality: backbone}) for several, not " + ("both" if broad_encoder is not None else "neither"))
    if broad_encoders is None:
        if broad_modalities is not None:
            raise VideosslError("broad_modalities names the keys of broad_encoders: with one broad_encoder set "
                                "broad_modality instead")
        modalities = [broad_modality or "rgb"]
    else:
        if broad_modality is not None:
            raise VideosslError(f"broad_modality {broad_modality!r} names the one broad view of broad_encoder; with "
                                "broad_encoders the modalities are its keys (set broad_modality: null)")
        if not broad_encoders:
            raise VideosslError("broad_encoders is empty: give {modality: backbone} for each broad view")
        modalities = list(broad_modalities) if broad_modalities is not None else list(broad_encoders)
        if sorted(modalities) != sorted(broad_encoders) or len(set(modalities)) != len(modalities):
            raise VideosslError(f"broad_modalities {modalities} must list broad_encoders' keys {list(broad_encoders)} "
                                "once each")
    for m in modalities:
        if m not in BROAD_INPUTS:
            raise VideosslError(f"unknown broad_modality {m!r}: choose one of {', '.join(BROAD_INPUTS)}")
    return modalities


def _audio_mask(batch: dict[str, Any]) -> torch.Tensor | None:
    has = batch.get("has_audio")
    return None if has is None or bool(has.all()) else has.bool()


def _audio_input(method: BraVe, clip: torch.Tensor, batch: dict[str, Any] | None) -> torch.Tensor:
    if batch is None or "spectrogram" not in batch:
        raise VideosslError("broad_modality 'audio' needs the spectrogram in the batch: set data.audio (e.g. "
                            "{sample_rate: 16000, channels: 2, view: broad}) on shards made with --keep-audio "
                            "(or `videossl data synth --audio`)")
    return batch["spectrogram"]


def _audio_diff_input(method: BraVe, clip: torch.Tensor, batch: dict[str, Any] | None) -> torch.Tensor:
    # the change of the log-mel from one STFT frame to the next (the sound's frame differences): what is constant
    # over the window (a pitch, a pan, a timbre) cancels; how it moves stays. Same shape (the first frame: zeros).
    spec = _audio_input(method, clip, batch)
    return torch.cat([torch.zeros_like(spec[:, :, :1]), spec[:, :, 1:] - spec[:, :, :-1]], dim=2)


def _flow_input(method: BraVe, clip: torch.Tensor, batch: dict[str, Any] | None) -> torch.Tensor:
    if batch is None or "flow" not in batch:
        raise VideosslError("broad_modality 'flow' needs the flow in the batch: set data.extras: [flow.npz] "
                            "(the synthetic set stores ground-truth flow)")
    return flow_view(batch["flow"]["forward"], batch["indices"][view_indices(batch, "broad")[0]], clip.shape[-1])


def _flow_est_input(method: BraVe, clip: torch.Tensor, batch: dict[str, Any] | None) -> torch.Tensor:
    # flow between the broad view's consecutive frames (at a stride > 1 that spans `stride` source frames)
    flow = estimate_flow(clip.detach(), method.flow_estimator, **method.flow_estimator_opts)
    return flow_view(flow, torch.arange(clip.shape[2]).expand(clip.shape[0], -1), clip.shape[-1])


#: broad modality → (method, broad clip (B, 3, T, H, W), batch) → the broad backbone's input (``audio``: the
#: batch's log-mel spectrogram (B, C, frames, mel), which the reader cut from the broad view's window).
#: A new modality is one function and one entry here (its channel count is the broad encoder's in_channels).
BROAD_INPUTS: dict[str, Callable[[BraVe, torch.Tensor, dict[str, Any] | None], torch.Tensor]] = {
    "rgb": lambda method, clip, batch: clip,
    "randconv": lambda method, clip, batch: method.randconv(clip, generator=method.step_generator()),
    "frame_diff": lambda method, clip, batch: frame_differences(clip),
    "gray_diff": lambda method, clip, batch: gray_differences(clip),
    "flow": _flow_input,
    "flow_est": _flow_est_input,
    "audio": _audio_input,
    "audio_diff": _audio_diff_input,
}
