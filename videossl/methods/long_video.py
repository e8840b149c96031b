"""Masked long-video contrastive pre-training ("LongViViT", Papalampidi et al., CVPR 2024).

A joint space-time ViViT (``module.encoder``, :class:`videossl.models.vivit.ViViT`) sees clips with
most tubelet tokens *dropped* at training time (75%), and is trained contrastively:

* ``objective="video_text"``: video ↔ caption symmetric InfoNCE with a learnable CLIP temperature
  (logit scale initialised to 1/0.07, clamped ≤ 100), negatives gathered over all ranks with exact
  gradients; captions that repeat in the global batch are all positives (uniform targets).
  The text tower is the offline MiniLM (:class:`videossl.models.text.MiniLMText`, fine-tuned at
  ``text_lr_mult`` × the LR) or a small word-level transformer from scratch (the default).
  Captions are ``batch["caption"]``; with ``caption_source="class_prompt"`` (or ``auto`` on empty
  captions) they are class-name prompts, one template drawn per sample.
* ``objective="video_video"``: no text; two independently masked views of the same video (two
  ``copies`` of a random view, or the same long view twice: the masks differ) → MLP projector →
  symmetric InfoNCE (temperature 0.1, fixed or learnable).
  With ``second_view="motion"`` the second view is the clip's luma frame differences instead
  (:func:`videossl.models.motion.motion_view`): the two views then share motion rather than
  appearance, as BraVe's frame-difference broad view (on the synthetic set two RGB copies share the
  random per-video appearance, which is all the objective then learns).
* ``objective="both"``: the sum.
* ``hard_negatives="motion_swap"`` (video–text): each caption also gets a copy whose synthetic motion
  phrase is replaced by another class's (:func:`videossl.data.prompts.motion_swapped`, spec §10.3
  "same objects with another direction"); ``hard_negative_weight`` × a per-sample cross-entropy
  (:func:`videossl.losses.infonce.hard_negative_nce`, same temperature) asks each video to prefer its
  caption to the swapped one (``hard_negative_count`` swaps per caption, each with another class:
  7 makes it an 8-way choice of the motion with the appearance words held fixed). Without it the
  synthetic captions are told apart by their appearance words alone and motion is never needed
  (BENCHMARKS.md). Captions without a motion phrase get no negative (counted in ``hn_skipped``).
* ``hard_negatives="order_shuffle"`` (video–text, long videos): each long caption ("first A, then B, …,
  finally Z") gets up to ``hard_negative_count`` copies with the same events in other orders
  (:func:`videossl.data.prompts.order_shuffles`, spec §10.3 "same events in another order"), the same
  per-sample cross-entropy: without it distinct long captions are told apart by *which* events they hold,
  and their order is never needed. It needs a text tower that sees order (e.g.
  :class:`videossl.models.text.ClauseSequenceText` over stage 1's word tower).

* ``reverse_negatives=True``: the clip played **backwards** is each sample's own hard negative,
  ``reverse_weight`` × :func:`~videossl.losses.infonce.hard_negative_nce`. Video–text: each caption
  must prefer its video to the reversed video. Video–video: the second view must prefer the first
  (RGB) view to the first view reversed; each sample (both views) is first reversed with probability ½, so that
  playing direction as such (and codec cues such as the key frame being first) tells nothing. The
  reversed clip has the same frames, so its appearance is identical: only a feature of the *order*
  of the frames, i.e. of the motion, can tell it apart (cf. arrow-of-time and temporal-transformation
  negatives). It is a negative only where a video played backwards is another action (true of the
  synthetic set by construction: its class pairs are time reversals of each other; mostly true of
  real actions, but not of e.g. waving). Costs one more encoder pass per step. Logged: ``rev_loss``,
  ``rev_acc`` (how often the positive wins).
* ``order_negatives=K`` (long videos; our addition, not in arXiv:2312.07395): each caption must
  prefer its video to the same video cut into K chunks (whole tubelet steps, padding left in place) put in
  another random order, with the same kept tubelets moved along. Every event keeps its own motion, so
  only the *order* of the events tells the two apart: it is the video-side twin of ``order_shuffle``, which
  asks the same of the captions. A reordering can leave the events' order intact (e.g. two chunks inside
  one event swapped); such a negative is a false one. The cuts rarely fall at the events' bounds, so a
  reordered video shows cuts that a real one lacks (mid-motion scene changes, jumping objects), which the encoder
  can learn instead of the order: on the synthetic long set the term is solved while the caption-side order
  term stays at chance (BENCHMARKS.md, session 14). Logged ``vt_order_loss``, ``vt_order_acc``.
  ``order_cut="events"`` cuts at the parts' own bounds instead (``batch["event_starts"]``, read from the
  json's ``events``: the long synthetic preset's events, ``make-long``'s stitched clips; no class label is
  used): each part (an event with the still gap after it) moves whole, so the reordered video is another
  valid arrangement of the same parts, with the same kind of cut between them as the real one; it is
  masked anew (its tubelets do not line up with the original's). With the video–video objective
  (``video_video`` / ``both``) the same reordered clip is also the second view's hard negative: view 1 must
  prefer view 0 to view 0 in another order (logged ``vv_order_loss``, ``vv_order_acc``), an order signal
  that needs no text tower that reads order.

Stage 1 can add an image–text term (``image_view``: the name of a one-frame view embedded as a still
image through the ViViT's own 2D patch conv; the paper mixes image–text and video–text batches).
Stage 1 (short clips, everything trains) and stage 2 (long videos, 75% masking, only the last 4
ViViT blocks; ``freeze_text=True``) are two recipes (``recipes/long_video/``), not two classes.
See Papalampidi et al., arXiv:2312.07395.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from videossl.core.checkpoint import load_state, read_state_dict
from videossl.core.metrics import retrieval_metrics
from videossl.core.optim import OptimConfig, is_bias_or_norm
from videossl.data.loader.batch import to_clip, view, view_frames, view_indices, view_valid
from videossl.data.prompts import caption_ids, class_prompts, dataset_kind, motion_swaps, order_shuffles
from videossl.errors import VideosslError
from videossl.losses.infonce import hard_negative_nce, infonce_distributed
from videossl.methods.base import SSLMethod
from videossl.models.motion import motion_view
from videossl.models.text import HashTextTransformer
from videossl.models.vivit import permute_keep_indices, resize_spatial_table, resize_temporal_table

OBJECTIVES = ("video_text", "video_video", "both")
HARD_NEGATIVES = ("none", "motion_swap", "order_shuffle")
CAPTION_SOURCES = ("caption", "class_prompt", "auto")
SECOND_VIEWS = ("rgb", "motion")
ORDER_CUTS = ("even", "events")

__all__ = ["CAPTION_SOURCES", "HARD_NEGATIVES", "ORDER_CUTS", "SECOND_VIEWS", "LongVideoContrastive", "OBJECTIVES",
           "event_order"]


def _accepts(module: nn.Module, arg: str) -> bool:
    try:
        return arg in inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False


def _reversed(clip: torch.Tensor, valid: torch.Tensor | None, which: torch.Tensor | None = None):
    """The clip (B, C, T, H, W) played backwards (only the samples where ``which`` (B,) is set)."""
    rev_clip, rev_valid = clip.flip(2), (None if valid is None else valid.flip(1))
    if which is None:
        return rev_clip, rev_valid
    clip = torch.where(which.view(-1, 1, 1, 1, 1), rev_clip, clip)
    if valid is not None:
        valid = torch.where(which.view(-1, 1), rev_valid, valid)
    return clip, valid


def _other_order(k: int, generator: torch.Generator | None = None) -> list[int]:
    """A random order of ``k`` >= 2 items, never the original one (a draw of it is rotated by one)."""
    perm = torch.randperm(k, generator=generator)
    if torch.equal(perm, torch.arange(k)):
        perm = perm.roll(1)
    return perm.tolist()


def chunk_order(valid_steps: int, steps: int, chunks: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Source step of each of ``steps`` time steps: the first ``valid_steps`` cut into ``chunks`` near-equal runs
    put in a random order other than the original, the rest (padding) left in place; the identity when fewer
    than two steps are valid."""
    k = min(int(chunks), int(valid_steps))
    if k < 2:
        return torch.arange(steps)
    bounds = [round(i * valid_steps / k) for i in range(k + 1)]
    runs = [torch.arange(bounds[p], bounds[p + 1]) for p in _other_order(k, generator)]
    return torch.cat(runs + [torch.arange(valid_steps, steps)])


def _chunk_shuffled(clip: torch.Tensor, valid: torch.Tensor | None, step: int, chunks: int,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """The clip (B, C, T, H, W) with the valid part of its time axis cut into ``chunks`` runs of whole
    ``step``-frame steps (the tubelets) and put in another order, per sample: (clip, valid, src (B, T // step))."""
    b, t = clip.shape[0], clip.shape[2]
    if t % step:
        raise VideosslError(f"a {t}-frame clip does not split into {step}-frame steps")
    steps = t // step
    srcs = []
    for i in range(b):
        n = steps if valid is None else int(valid[i].view(steps, step).all(1).long().cumprod(0).sum())
        srcs.append(chunk_order(n, steps, chunks, generator))
    src = torch.stack(srcs).to(clip.device)
    frames = (src[:, :, None] * step + torch.arange(step, device=clip.device)).flatten(1)  # (B, T)
    out = clip.gather(2, frames[:, None, :, None, None].expand_as(clip))
    return out, (None if valid is None else valid.gather(1, frames)), src


def event_order(frames: torch.Tensor, valid: torch.Tensor | None, starts: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Source position of each of a clip's T frames: its valid frames grouped by the part of the video they show
    (``frames`` (T,): source frame indices; ``starts`` (K,): the parts' start frames, -1 = padding), the parts
    put in a random order other than the original, each part whole and in itself unchanged; invalid frames
    (padding) stay at the end. The identity when fewer than two parts are in view."""
    t = frames.shape[0]
    n = t if valid is None else int(valid.long().cumprod(0).sum())
    st = starts[starts >= 0].sort().values.to(frames.device)
    part = (torch.searchsorted(st, frames[:n].contiguous(), right=True) - 1).clamp(min=0)
    ids = part.unique(sorted=True)
    if len(ids) < 2:
        return torch.arange(t, device=frames.device)
    runs = [(part == ids[p]).nonzero().flatten() for p in _other_order(len(ids), generator)]
    return torch.cat(runs + [torch.arange(n, t, device=frames.device)])


def _event_shuffled(clip: torch.Tensor, valid: torch.Tensor | None, frames: torch.Tensor, starts: torch.Tensor,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The clip (B, C, T, H, W) with its parts (:func:`event_order`) in another order, per sample."""
    src = torch.stack([event_order(frames[i], None if valid is None else valid[i], starts[i], generator)
                       for i in range(clip.shape[0])]).to(clip.device)
    out = clip.gather(2, src[:, None, :, None, None].expand_as(clip))
    return out, (None if valid is None else valid.gather(1, src))


def _hard_negative_term(q: torch.Tensor, k: torch.Tensor, k_neg: torch.Tensor, temperature,
                        name: str) -> tuple[torch.Tensor, dict]:
    """Each query must prefer its key to the same key computed from a transformed clip (reversed, reordered):
    the loss and ``{name}_loss`` / ``{name}_acc`` (how often the positive wins)."""
    loss = hard_negative_nce(q.float(), k.float(), k_neg.float()[:, None], temperature)
    with torch.no_grad():
        qn, kn, rn = (F.normalize(x.float(), dim=-1) for x in (q, k, k_neg))
        acc = ((qn * kn).sum(-1) > (qn * rn).sum(-1)).float().mean()
    return loss, {f"{name}_loss": loss.detach(), f"{name}_acc": acc}


class LongVideoContrastive(SSLMethod):
    """Masked video–text / video–video contrastive learning.

    Args:
        encoder: the video encoder (a :class:`~videossl.models.vivit.ViViT`; its ``mask_ratio`` and
            ``trainable_blocks`` say how it is masked and what trains); ``self.encoder``.
        objective: ``video_text`` | ``video_video`` | ``both``.
        text_encoder: text tower (``list[str] → (B, D)``); default a from-scratch
            :class:`~videossl.models.text.HashTextTransformer`. Unused for ``video_video``.
        embed_dim: joint embedding size (linear video / text projections).
        init_temperature, max_logit_scale: CLIP-style learnable logit scale (1/0.07, ≤ 100).
        video_temperature, learn_video_temperature: video–video InfoNCE temperature.
        proj_hidden: hidden width of the video–video MLP projector.
        text_lr_mult: LR multiplier of the text tower (0.1 for a pre-trained tower).
        freeze_text: stage 2: the text tower gets no gradient (the projections still train).
        fixed_text: stage 2: the whole text side gets no gradient: the tower, a new head on it (e.g.
            :class:`~videossl.models.text.ClauseSequenceText`, kept at its random initialisation) and the text
            projection, so the caption embeddings are a fixed target (our deviation from the paper, whose
            text projection trains: a trainable head drifts toward order-blind captions, BENCHMARKS.md).
        caption_source: ``caption`` (batch captions), ``class_prompt`` (templates around the class
            name of ``batch["label"]``), ``auto`` (captions, prompts where a caption is empty).
        class_names: class list for prompts (default: the datamodule's).
        local_loss: distributed InfoNCE computes only local rows (less memory, same gradient).
        hard_negatives, hard_negative_weight: caption-side hard negatives (``motion_swap``).
        hard_negative_count: motion-swapped captions per caption, each with another class (1..7;
            7 = every other motion: an 8-way choice of the motion with the appearance words fixed);
            ``order_shuffle``: other orders per caption (at most, 1..7).
        reverse_negatives, reverse_weight: video-side hard negatives: the same clip played
            backwards (see the module docstring).
        order_negatives, order_weight: video-side hard negatives for long videos: the same clip cut into
            ``order_negatives`` chunks put in another order (0: off; see the module docstring).
        order_cut: where the video-side order negative is cut: ``even`` (``order_negatives`` near-equal
            chunks of whole tubelet steps) or ``events`` (at each sample's part starts, ``batch["event_starts"]``;
            ``order_negatives`` then only switches the term on).
        clip_view: the name of the data's clip view (its first output is the clip, its second, if any, the
            video-video objective's second view).
        image_view, image_weight: stage 1's image–text term: the name of a one-frame view in the
            batch, embedded as a still image (the encoder's own 2D patch conv, ``image_input``) and
            contrasted with the same captions (``image_weight`` × InfoNCE; logged ``it_loss``).
        second_view: the video-video objective's second view: ``rgb`` (another augmented copy) or
            ``motion`` (:func:`videossl.models.motion.motion_view`: luma frame differences,
            ``0.45 + motion_view_gain · Δ``, no colour or static texture).
        init_from: a previous stage's Lightning checkpoint (or state dict): every module's weights
            (encoder, text tower, projections, temperature) with the ViViT position tables resized
            to this encoder's sizes (stage 1 at 16 frames → stage 2 at 128).
    """

    def __init__(
        self,
        encoder: nn.Module,
        objective: str = "video_text",
        text_encoder: nn.Module | None = None,
        embed_dim: int = 256,
        init_temperature: float = 0.07,
        max_logit_scale: float = 100.0,
        video_temperature: float = 0.1,
        learn_video_temperature: bool = False,
        proj_hidden: int = 1024,
        text_lr_mult: float = 1.0,
        freeze_text: bool = False,
        fixed_text: bool = False,
        caption_source: str = "auto",
        class_names: list[str] | None = None,
        local_loss: bool = False,
        hard_negatives: str = "none",
        hard_negative_weight: float = 1.0,
        hard_negative_count: int = 1,
        reverse_negatives: bool = False,
        reverse_weight: float = 1.0,
        order_negatives: int = 0,
        order_weight: float = 1.0,
        order_cut: str = "even",
        second_view: str = "rgb",
        motion_view_gain: float = 4.0,
        clip_view: str = "clip",
        image_view: str | None = None,
        image_weight: float = 1.0,
        init_from: str | None = None,
        optim: OptimConfig | None = None,
        num_classes: int = 0,
        probe_lr: float = 1e-2,
        seed: int = 0,
        compile: bool | dict[str, Any] = False,
        channels_last: bool = False,
    ) -> None:
        super().__init__(optim=optim, num_classes=num_classes, probe_lr=probe_lr,
                         compile=compile, channels_last=channels_last)
        self.seed = int(seed)
        if objective not in OBJECTIVES:
            raise VideosslError(f"unknown objective {objective!r}: choose one of {', '.join(OBJECTIVES)}")
        if caption_source not in CAPTION_SOURCES:
            raise VideosslError(f"unknown caption_source {caption_source!r}: choose one of {', '.join(CAPTION_SOURCES)}")
        if hard_negatives not in HARD_NEGATIVES:
            raise VideosslError(f"unknown hard_negatives {hard_negatives!r}: choose one of {', '.join(HARD_NEGATIVES)}")
        if hard_negatives != "none" and objective == "video_video":
            raise VideosslError("hard_negatives are captions: they need objective video_text or both")
        self.hard_negatives, self.hard_negative_weight = hard_negatives, float(hard_negative_weight)
        if not 1 <= int(hard_negative_count) <= 7:
            raise VideosslError(f"hard_negative_count must be in 1..7 (the other motion classes), got {hard_negative_count}")
        self.hard_negative_count = int(hard_negative_count)
        self.reverse_negatives, self.reverse_weight = bool(reverse_negatives), float(reverse_weight)
        if int(order_negatives) == 1 or int(order_negatives) < 0:
            raise VideosslError(f"order_negatives is a number of chunks to reorder (0: off, or >= 2), got {order_negatives}")
        if order_negatives and reverse_negatives and objective != "video_text":
            raise VideosslError("order_negatives with reverse_negatives: the video-video order term is defined on forward "
                                "clips only; use one of the two with objective video_video or both")
        self.order_negatives, self.order_weight = int(order_negatives), float(order_weight)
        if order_cut not in ORDER_CUTS:
            raise VideosslError(f"unknown order_cut {order_cut!r}: choose one of {', '.join(ORDER_CUTS)}")
        self.order_cut = order_cut
        if second_view not in SECOND_VIEWS:
            raise VideosslError(f"unknown second_view {second_view!r}: choose one of {', '.join(SECOND_VIEWS)}")
        if second_view != "rgb" and objective == "video_text":
            raise VideosslError("second_view is the video-video objective's second view: use objective video_video or both")
        self.second_view, self.motion_view_gain = second_view, float(motion_view_gain)
        if image_view is not None:
            if objective == "video_video":
                raise VideosslError("image_view pairs images with captions: it needs objective video_text or both")
            if image_view == clip_view:
                raise VideosslError(f"image_view names a one-frame view other than the clip view {clip_view!r}")
            if not getattr(encoder, "image_input", False):
                raise VideosslError("image_view needs an encoder built with image_input=True")
        self.clip_view, self.image_view, self.image_weight = str(clip_view), image_view, float(image_weight)
        self.encoder_view = self.clip_view
        if min(init_temperature, max_logit_scale, video_temperature) <= 0:
            raise VideosslError("temperatures and max_logit_scale must be positive")
        dim = getattr(encoder, "feature_dim", None)
        if dim is None:
            raise VideosslError(f"{type(encoder).__name__} declares no feature_dim")
        self.encoder = encoder
        self.objective = objective
        self.caption_source = caption_source
        self.class_names = list(class_names) if class_names else None
        self.local_loss = bool(local_loss)
        self.text_lr_mult = float(text_lr_mult)
        self.max_logit_scale = float(max_logit_scale)
        self._valid_kw = _accepts(encoder, "valid")
        self._reports_kept = _accepts(encoder, "return_kept")  # a token-dropping ViViT says what it kept
        self._takes_generator = _accepts(encoder, "generator")
        self.uses_text = objective in ("video_text", "both")
        self.uses_video = objective in ("video_video", "both")
        self.text_encoder = None
        if self.uses_text:
            if text_encoder is None:

                text_encoder = HashTextTransformer()
            tdim = getattr(text_encoder, "feature_dim", None)
            if tdim is None:
                raise VideosslError(f"{type(text_encoder).__name__} declares no feature_dim")
            self.text_encoder = text_encoder
            if freeze_text:  # a tower with a new head on a previous stage's tower freezes that tower only
                for p in getattr(self.text_encoder, "frozen_part", self.text_encoder).parameters():
                    p.requires_grad_(False)
            self.video_proj = nn.Linear(dim, embed_dim)
            self.text_proj = nn.Linear(tdim, embed_dim)
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))
            if fixed_text:
                for p in (*self.text_encoder.parameters(), *self.text_proj.parameters()):
                    p.requires_grad_(False)
        elif fixed_text:
            raise VideosslError("fixed_text fixes the text side: it needs objective video_text or both")
        self.freeze_text = bool(freeze_text)
        if self.uses_video:
            self.video_head = nn.Sequential(
                nn.Linear(dim, proj_hidden), nn.BatchNorm1d(proj_hidden), nn.ReLU(inplace=True), nn.Linear(proj_hidden, embed_dim)
            )
            t = torch.tensor(math.log(1.0 / video_temperature))
            if learn_video_temperature:
                self.video_logit_scale = nn.Parameter(t)
            else:
                self.register_buffer("video_logit_scale", t)
        self._val: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._build_probe()
        if init_from:
            self.load_previous_stage(init_from)

    def load_previous_stage(self, source) -> None:
        """Weights of a previous stage (checkpoint path or state dict); the online probe is not carried over."""

        sd = dict(read_state_dict(source))
        own = self.state_dict()
        adopt = getattr(self.text_encoder, "adopt_base_state", None)
        if adopt is not None:  # a previous stage's plain text tower under a new head (ClauseSequenceText)
            adopt(sd, "text_encoder.", own)
        for k in ("encoder.pos_temporal", "encoder.pos_spatial"):
            if k in sd and k in own and sd[k].shape != own[k].shape:
                if k.endswith("temporal"):
                    sd[k] = resize_temporal_table(sd[k].float(), own[k].shape[1])
                else:
                    g0 = int(round(math.sqrt(sd[k].shape[1])))
                    g1 = tuple(getattr(self.encoder, "grid", (int(round(math.sqrt(own[k].shape[1]))),) * 2))
                    sd[k] = resize_spatial_table(sd[k].float(), (g0, g0), g1)
        if self.uses_video and not any(k.startswith("video_head.") for k in sd):  # a previous video-text-only stage:
            sd.update({k: v for k, v in own.items() if k.startswith(("video_head.", "video_logit_scale"))})  # starts fresh
        load_state(self, sd, what=f"init_from {source if isinstance(source, str) else 'state dict'}",
                   allow_missing=False, allow_unexpected=False, hint="a different model?")

    # -- encoders ------------------------------------------------------------------------------
    def step_generators(self, device: torch.device) -> tuple[torch.Generator, torch.Generator]:
        """(on ``device``, on the CPU) generators for this training step's random draws (playing direction,
        token masks; prompt choice), seeded from ``seed`` and the global step: a run resumed from a
        checkpoint draws exactly what the uninterrupted run drew (the global RNG is not checkpointed)."""
        s = (self.seed * 1_000_003 + int(self.global_step)) % (2**63)
        return torch.Generator(device=device).manual_seed(s), torch.Generator().manual_seed(s)

    def encode(self, clip: torch.Tensor, valid: torch.Tensor | None = None, keep: torch.Tensor | None = None,
               with_kept: bool = False, generator: torch.Generator | None = None):
        """Encoder features (B, D) of a float clip (B, C, T, H, W); masked in training mode (``keep``:
        explicit kept token indices, for a token-dropping encoder; otherwise drawn from ``generator``).
        ``with_kept=True`` returns ``(features, kept)``, where ``kept`` is the encoder's
        :class:`~videossl.models.vivit.Kept` (None for an encoder that drops no tokens)."""
        kw: dict[str, Any] = {}
        if generator is not None and self._takes_generator:
            kw["generator"] = generator
        if self._valid_kw and valid is not None and not bool(valid.all()):
            kw["valid"] = valid
        if keep is not None:
            kw["keep"] = keep
        if not with_kept:
            return self.encoder(clip, **kw)
        if not self._reports_kept:
            return self.encoder(clip, **kw), None
        return self.encoder(clip, return_kept=True, **kw)

    def _encode_moved(self, clip: torch.Tensor, valid: torch.Tensor | None, src: torch.Tensor | None, kept) -> torch.Tensor:
        """Features of ``clip`` (already moved in time: its tubelet step ``j`` is the original's ``src[:, j]``),
        masked like the encoding of the original that returned ``kept``: the same tubelets, moved along, so
        both hold exactly the same pixels. Unmasked outside training or without kept indices."""
        keep = None if kept is None else kept.indices
        if not self.training or keep is None or src is None or keep.shape[0] != clip.shape[0]:
            return self.encode(clip, valid)
        return self.encode(clip, valid, keep=permute_keep_indices(keep, src, kept.grid[1] * kept.grid[2]))

    def encode_reversed(self, clip: torch.Tensor, valid: torch.Tensor | None, kept) -> torch.Tensor:
        """Features of ``clip`` played backwards, masked like the encoding that returned ``kept``:
        with a token-dropping encoder the reversed clip keeps the same tubelets (mirrored in time,
        :func:`~videossl.models.vivit.mirror_keep_indices`), so it holds exactly the same pixels as
        that clip and differs from it only in their order."""
        rc, rv = _reversed(clip, valid)
        src = None if kept is None else torch.arange(kept.grid[0] - 1, -1, -1, device=clip.device).expand(clip.shape[0], -1)
        return self._encode_moved(rc, rv, src, kept)

    def encode_reordered(self, clip: torch.Tensor, valid: torch.Tensor | None, kept,
                         generator: torch.Generator | None = None) -> torch.Tensor:
        """Features of ``clip`` with its chunks in another order (:func:`_chunk_shuffled`, whole tubelet steps),
        masked like the encoding that returned ``kept`` (the same tubelets, moved with their chunks)."""
        step = 1 if kept is None else clip.shape[2] // kept.grid[0]
        rc, rv, src = _chunk_shuffled(clip, valid, step, self.order_negatives, generator)
        return self._encode_moved(rc, rv, None if kept is None else src, kept)

    def encode_order_negative(self, batch: dict[str, Any], clip: torch.Tensor, valid: torch.Tensor | None, kept,
                              generator: torch.Generator | None, generator_cpu: torch.Generator | None) -> torch.Tensor:
        """Features of the video-side order negative of ``clip`` (output 0 of the clip view), cut as ``order_cut``
        says: even chunks (:meth:`encode_reordered`, the tubelets of ``kept`` moved along) or the sample's parts
        (:func:`event_order`, masked anew from ``generator``)."""
        if self.order_cut == "even":
            return self.encode_reordered(clip, valid, kept, generator_cpu)
        starts = batch.get("event_starts")
        if starts is None:
            raise VideosslError("order_cut='events' needs each sample's parts: the shards' json must list 'events' "
                                "with their 'start' frames (the long synthetic preset and make-long write them)")
        rc, rv = _event_shuffled(clip, valid, view_frames(batch, self.clip_view, 0).to(clip.device), starts, generator_cpu)
        return self.encode(rc, rv, generator=generator)

    def temperature(self) -> torch.Tensor:
        return 1.0 / self.logit_scale.exp().clamp(max=self.max_logit_scale)

    def embed_video(self, clip: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """L2-normalised joint-space video embeddings (video–text objective)."""
        return F.normalize(self.video_proj(self.encode(clip, valid)), dim=-1)

    def embed_text(self, texts: list[str]) -> torch.Tensor:
        """L2-normalised joint-space caption embeddings."""
        if self.text_encoder is None:
            raise VideosslError("this model has no text tower (objective video_video)")
        return F.normalize(self.text_proj(self.text_encoder(list(texts))), dim=-1)

    # -- captions ------------------------------------------------------------------------------
    def _class_names(self) -> list[str] | None:
        if self.class_names is None and self._trainer is not None:
            dm = getattr(self.trainer, "datamodule", None)
            names = getattr(dm, "classes", None)
            self.class_names = list(names) if names else None
        return self.class_names

    def captions(self, batch: dict[str, Any], generator: torch.Generator | None = None) -> list[str]:
        caps = [str(c) for c in batch.get("caption") or [""] * len(batch["label"])]
        src = self.caption_source
        need = [i for i, c in enumerate(caps) if src == "class_prompt" or (src == "auto" and not c.strip())]
        if need:
            names = self._class_names()
            if not names:
                raise VideosslError("class-name prompts need class names (class_names or a datamodule with classes)")
            kind = dataset_kind(names)
            labels = batch["label"].tolist()
            for i in need:
                if not 0 <= labels[i] < len(names):
                    raise VideosslError(f"sample without caption and without a valid label ({labels[i]})")
                options = class_prompts(names[labels[i]], kind)
                caps[i] = options[int(torch.randint(len(options), (), generator=generator).item())]
        if self.caption_source == "caption" and any(not c.strip() for c in caps):
            raise VideosslError("empty caption in the batch: use caption_source auto/class_prompt for labelled data")
        return caps

    # -- steps ---------------------------------------------------------------------------------
    def _view(self, batch: dict[str, Any], k: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Output ``k`` of the clip view (its last output when it has fewer: the same clip masked anew)."""
        k = min(k, max(len(view_indices(batch, self.clip_view)), 1) - 1)
        return to_clip(view(batch, self.clip_view, k)), view_valid(batch, self.clip_view, k)

    def ssl_step(self, batch: dict[str, Any]):
        logs: dict[str, torch.Tensor] = {}
        clip0, valid0 = self._view(batch, 0)
        g, g_cpu = self.step_generators(clip0.device)
        flip = None
        if self.uses_video and self.reverse_negatives:  # random playing direction per sample, both views alike
            flip = torch.rand(clip0.shape[0], device=clip0.device, generator=g) < 0.5
        if self.uses_text or flip is None:
            f0, kept0 = self.encode(clip0, valid0, with_kept=True, generator=g)
        else:
            f0, kept0 = self.encode(*_reversed(clip0, valid0, flip), with_kept=True, generator=g)
        feats, loss = f0, f0.new_zeros(())
        f_ord = None  # the video-side order negative: its features, shared by the two objectives
        if self.order_negatives:
            f_ord = self.encode_order_negative(batch, clip0, valid0, kept0, g, g_cpu)
        if self.uses_text:
            caps = self.captions(batch, g_cpu)
            v = self.video_proj(f0)
            t = self.text_proj(self.text_encoder(caps))
            ids = caption_ids(caps, v.device)
            temp = self.temperature()
            l_vt = infonce_distributed(v.float(), t.float(), temp, labels=ids, local_loss=self.local_loss)
            loss = loss + l_vt
            logs["vt_loss"] = l_vt.detach()
            logs["logit_scale"] = (1.0 / temp).detach()
            with torch.no_grad():
                sim = F.normalize(t.float(), dim=-1) @ F.normalize(v.float(), dim=-1).t()
                logs["t2v_r1_batch"] = (ids[sim.argmax(1)] == ids).float().mean()
            if self.hard_negatives != "none":
                l_hn, hn_logs = self._hard_negative_loss(v, t, caps, temp, g_cpu)
                loss = loss + self.hard_negative_weight * l_hn
                logs.update(hn_logs)
            if self.reverse_negatives:
                v_rev = self.video_proj(self.encode_reversed(clip0, valid0, kept0))
                l_rev, rev_logs = _hard_negative_term(t, v, v_rev, temp, "rev")
                loss = loss + self.reverse_weight * l_rev
                logs.update({f"vt_{k}": x for k, x in rev_logs.items()})
            if f_ord is not None:
                l_ord, ord_logs = _hard_negative_term(t, v, self.video_proj(f_ord), temp, "order")
                loss = loss + self.order_weight * l_ord
                logs.update({f"vt_{k}": x for k, x in ord_logs.items()})
            if self.image_view is not None:
                img = to_clip(view(batch, self.image_view))
                if img.shape[2] != 1:
                    raise VideosslError(f"image_view {self.image_view!r}: the batch needs a one-frame view there, got "
                                        f"shape {tuple(img.shape)}")
                l_it = infonce_distributed(self.video_proj(self.encode(img, generator=g)).float(), t.float(), temp, labels=ids,
                                           local_loss=self.local_loss)
                loss = loss + self.image_weight * l_it
                logs["it_loss"] = l_it.detach()
        if self.uses_video:
            clip1, valid1 = self._view(batch, 1)
            g0 = f0
            if flip is not None:
                clip1, valid1 = _reversed(clip1, valid1, flip)
                clip0, valid0 = _reversed(clip0, valid0, flip)
                if self.uses_text:  # the text term saw the forward clip: encode the chosen direction
                    g0, kept0 = self.encode(clip0, valid0, with_kept=True, generator=g)  # kept0: the tubelets view 0 kept
            if self.second_view == "motion":
                clip1 = self._motion_view(clip1)
            f1 = self.encode(clip1, valid1, generator=g)  # a second, independently masked view
            z0, z1 = self.video_head(g0), self.video_head(f1)
            temp_v = 1.0 / self.video_logit_scale.exp().clamp(max=self.max_logit_scale)
            l_vv = infonce_distributed(z0.float(), z1.float(), temp_v, local_loss=self.local_loss)
            loss = loss + l_vv
            logs["vv_loss"] = l_vv.detach()
            if flip is not None:
                # view 1 must prefer view 0 to view 0 played backwards (same tubelets, RGB in both modes)
                f0_rev = self.encode_reversed(clip0, valid0, kept0)
                l_rev, rev_logs = _hard_negative_term(z1, z0, self.video_head(f0_rev), temp_v, "rev")
                loss = loss + self.reverse_weight * l_rev
                logs.update({f"vv_{k}": x for k, x in rev_logs.items()})
                if not self.uses_text:  # the online probe gets features of the clip played forwards
                    feats = torch.where(flip[:, None], f0_rev, g0)
            elif f_ord is not None:
                # view 1 must prefer view 0 to view 0 with its parts in another order
                l_ordv, ordv_logs = _hard_negative_term(z1, z0, self.video_head(f_ord), temp_v, "order")
                loss = loss + self.order_weight * l_ordv
                logs.update({f"vv_{k}": x for k, x in ordv_logs.items()})
        return loss, feats, logs

    def _motion_view(self, clip: torch.Tensor) -> torch.Tensor:
        return motion_view(clip, self.motion_view_gain)

    def _hard_negative_loss(self, v: torch.Tensor, t: torch.Tensor, caps: list[str], temp: torch.Tensor,
                            generator: torch.Generator | None = None):
        """Caption-side hard negatives (``motion_swap``: ``m`` per caption; ``order_shuffle``: up to ``m``, the
        missing ones masked out of the loss)."""
        m = self.hard_negative_count
        if self.hard_negatives == "order_shuffle":
            swapped = [order_shuffles(c, m, generator=generator) for c in caps]
        else:
            swapped = [motion_swaps(c, m, generator=generator) for c in caps]
        keep = [i for i, c in enumerate(swapped) if c is not None]
        logs = {"hn_skipped": torch.tensor(float(len(caps) - len(keep)), device=v.device)}
        k_neg = t.new_zeros(t.shape[0], m, t.shape[1])
        valid = torch.zeros(t.shape[0], m, dtype=torch.bool, device=t.device)
        if keep:
            texts = [x for i in keep for x in swapped[i]]
            emb = self.text_proj(self.text_encoder(texts)).to(t.dtype)
            j = 0
            for i in keep:
                n = len(swapped[i])
                k_neg[i, :n] = emb[j : j + n]
                valid[i, :n] = True
                j += n
        l_hn = hard_negative_nce(v.float(), t.float(), k_neg.float(), temp, valid=valid)
        with torch.no_grad():
            vn, tn, nn_ = F.normalize(v.float(), dim=-1), F.normalize(t.float(), dim=-1), F.normalize(k_neg.float(), dim=-1)
            pos, neg = (vn * tn).sum(-1), torch.einsum("bd,bmd->bm", vn, nn_)
            wins = ((pos[:, None] > neg) | ~valid).all(1)[valid.any(1)]  # the own caption beats every real negative
            logs["hn_acc"] = wins.float().mean() if wins.numel() else v.new_zeros(())
        logs["hn_loss"] = l_hn.detach()
        return l_hn, logs

    def eval_features(self, batch: dict[str, Any]) -> torch.Tensor:
        clip, valid = self._view(batch, 0)
        return self.encode(clip, valid)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)
        if not self.uses_text:
            return
        keep = ~batch["duplicate"] if "duplicate" in batch else torch.ones(len(batch["label"]), dtype=torch.bool)
        clip, valid = self._view(batch, 0)
        caps = [c for c, k in zip(self.captions(batch), keep.tolist(), strict=True) if k]
        if not caps:
            return
        v = self.embed_video(clip[keep.to(clip.device)], None if valid is None else valid[keep.to(valid.device)])
        t = self.embed_text(caps)
        self._val.append((v.float(), t.float(), caption_ids(caps, v.device)))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        v, t, ids = (torch.cat(x) for x in zip(*self._val, strict=True))
        self._val = []
        m = retrieval_metrics(t @ v.t(), ids, ids)
        for k in ("t2v_r1", "t2v_r5", "v2t_r1"):
            self.log(f"val/{k}", m[k], sync_dist=True)

    # -- optimiser -----------------------------------------------------------------------------
    def param_groups(self, lr: float):
        """The text tower trains at ``text_lr_mult`` × the LR (its own decay / no-decay groups)."""
        cfg = self.optim
        if self.text_encoder is None:
            return super().param_groups(lr)
        text_names = {f"text_encoder.{n}" for n, _ in self.text_encoder.named_parameters()}
        params = [(n, p) for n, p in super().param_groups(lr)[0] if n not in text_names]
        decay, no_decay = [], []
        for n, p in self.text_encoder.named_parameters():
            if p.requires_grad:
                (no_decay if cfg.exclude_bias_and_norm and is_bias_or_norm(n, p) else decay).append(p)
        extra = [{"params": ps, "weight_decay": wd, "lr": lr * self.text_lr_mult}
                 for ps, wd in ((decay, cfg.weight_decay), (no_decay, 0.0)) if ps]
        return params, extra
