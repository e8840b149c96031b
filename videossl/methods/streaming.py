"""Causal training of a pipelined (streaming) encoder: BP, Sideways, Skip-Sideways; one Lightning module.

``mode``:

* ``bp``: synchronous backprop through the pipeline unrolled over the clip (arXiv 1806.03863 §3 trains its
  depth-parallel networks this way, causally, scored at every tick once the pipe is full).
* ``sideways``: each stage its own graph on detached inputs, the stored delta moves one stage per tick
  (arXiv 2001.06232 §3); ``skip_sideways``: the same on a pipeline with skips, deltas summed over a stage's
  consumers (arXiv 2106.08318 §3). The rules themselves are :mod:`videossl.models.sideways`. ``skips`` entries
  are ``[src, dst]`` or lagged ``[src, dst, lag]`` (:class:`~videossl.models.pipelined.PipelinedEncoder`); with
  ``skip_op: concat`` a :class:`~videossl.models.pipelined.FrameCNN` backbone's ``concat_skips`` must count the
  skips into each stage (checked).
* ``sequential``: the per-frame model without pipelining, per-frame logits averaged over the clip, BP; the
  clip-model baseline the pipelined model is compared with.

``frame_input``: ``rgb`` or ``rgb_diff`` (frame and causal frame difference, the latter times ``diff_scale``).

``reverse_p`` with ``reversed_class``: time-reversal augmentation for label sets closed under reversal (the
synthetic set's eight motion classes are four reversal pairs: left / right, up / down, cw / ccw, in / out):
with probability ``reverse_p`` a training clip is played backwards and its label becomes ``reversed_class[y]``.
A class that no single frame decides stays so under it: a frame that sits early in a left-moving clip sits late
in a right-moving one, so where an object is in one frame stops telling the direction (our own addition, not in
the papers). :meth:`StreamingClassifier.reversal_pair_accuracy` is the matching evaluation.

``update``: ``per_clip`` (one optimiser step per clip, gradients summed over its scored ticks) or
``per_tick`` (Sideways modes: a step after every tick). Every ``cosine_every`` steps a Sideways run also
computes BP on the same clip and logs the per-stage cosine between the two weight gradients
(``train/cos/stages.<l>``); with ``reversed_class`` set it also logs ``train/cos_rev/stages.<l>``, the same
cosine for the gradient that separates each clip's class from its time-reversed class, G(x, y) − G(x,
reversed_class[y]). On a batch that holds every clip together with its reversal, the parts that do not depend on
the order of frames cancel, and this is the part that teaches the order. It can be far lower than the whole
gradient's (Skip-Sideways on left / right at init: 0.96–1.0 for the whole, −0.17–0.39 for this part;
BENCHMARKS.md). On training batches, whose clips come without their reversals, it is the label-dependent part,
which also holds any single-frame cue.

It subclasses :class:`~videossl.methods.base.SSLMethod` (optimiser / schedule from config, ``module.encoder``
saved under ``encoder.``) so ``videossl fit`` runs it, with manual optimisation (``automatic_optimization =
False``); it is supervised, so the base's online probe is not built: ``num_classes`` sizes the classifier.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from videossl.core.optim import OptimConfig
from videossl.data.loader.batch import to_clip, view
from videossl.errors import VideosslError
from videossl.methods.base import SSLMethod
from videossl.models.pipelined import FRAME_INPUTS, PipelinedEncoder, frame_inputs
from videossl.models.sideways import bp_clip_grads, grad_cosines, init_sideways, sideways_clip_grads, sideways_tick

MODES = ("bp", "sideways", "skip_sideways", "sequential")
UPDATES = ("per_clip", "per_tick")


class StreamingClassifier(SSLMethod):
    """A :class:`PipelinedEncoder` over ``backbone`` plus a linear classifier, trained causally."""

    encoder_arg = "backbone"

    def __init__(self, backbone: nn.Module, stages: list[int] | None = None, clocks: list[int] | None = None,
                 skips: list[list[int]] | None = None, skip_op: str = "add", mode: str = "bp",
                 update: str = "per_clip", frame_input: str = "rgb", diff_scale: float = 1.0, view_name: str = "stream",
                 warmup_ticks: int | None = None, cosine_every: int = 0, reverse_p: float = 0.0,
                 reversed_class: list[int] | None = None, optim: OptimConfig | None = None,
                 num_classes: int = 0, probe_lr: float = 1e-2, seed: int = 0) -> None:
        super().__init__(optim=optim, num_classes=0, probe_lr=probe_lr, seed=seed)
        if mode not in MODES:
            raise VideosslError(f"mode {mode!r}: expected one of {MODES}")
        if update not in UPDATES:
            raise VideosslError(f"update {update!r}: expected one of {UPDATES}")
        if frame_input not in FRAME_INPUTS:
            raise VideosslError(f"frame_input {frame_input!r}: expected one of {FRAME_INPUTS}")
        skips = [tuple(s) for s in (skips or [])]
        if mode == "skip_sideways" and not skips:
            raise VideosslError("mode skip_sideways needs skips (e.g. [[0, 2], [1, 3]])")
        if mode == "sideways" and skips:
            raise VideosslError("mode sideways has no skips: use mode skip_sideways")
        if update == "per_tick" and mode not in ("sideways", "skip_sideways"):
            raise VideosslError(f"update per_tick is a Sideways schedule; mode {mode} updates per clip")
        self.mode, self.update, self.frame_input, self.view_name = mode, update, frame_input, view_name
        self.diff_scale = float(diff_scale)
        self.encoder = PipelinedEncoder.from_sequential(backbone, stages=stages, clocks=clocks, skips=skips,
                                                        skip_op=skip_op)
        wide = getattr(backbone, "concat_skips", None)
        if wide is not None and stages is None:  # one layer per stage: the widths must fit the concatenated skips
            into = [0] * self.encoder.num_stages
            if skip_op == "concat":
                for d in [d for _, d in self.encoder.skips] + [d for _, d, _ in self.encoder.lagged]:
                    into[d] += 1
            if list(wide) != into:
                raise VideosslError(f"backbone concat_skips {list(wide)} != the skips concatenated into each stage "
                                    f"{into} (skips {skips}, skip_op {skip_op})")
        dim = getattr(backbone, "feature_dim", None)
        if dim is None:
            raise VideosslError(f"{type(backbone).__name__} declares no feature_dim: the classifier needs it")
        self.classes = int(num_classes)
        if self.classes < 1:
            raise VideosslError("StreamingClassifier is supervised: num_classes must be > 0 (fit sets it from the data)")
        self.head = nn.Linear(int(dim), self.classes)
        self.reverse_p = float(reverse_p)
        if not 0.0 <= self.reverse_p <= 1.0:
            raise VideosslError(f"reverse_p must be in [0, 1], got {reverse_p}")
        self.reversed_class = None if reversed_class is None else [int(c) for c in reversed_class]
        rc = self.reversed_class
        if rc is not None and (sorted(rc) != list(range(self.classes)) or any(rc[c] != i for i, c in enumerate(rc))):
            raise VideosslError(f"reversed_class {rc} must pair up the {self.classes} classes (a permutation that is "
                                "its own inverse: reversed_class[reversed_class[y]] == y)")
        if self.reverse_p > 0 and rc is None:
            raise VideosslError("reverse_p > 0 needs reversed_class: the label of each class played backwards")
        self.warmup_ticks = warmup_ticks
        self.cosine_every = int(cosine_every)
        self.automatic_optimization = False

    # -- pieces ---------------------------------------------------------------------------------
    def view_clip(self, batch: dict[str, Any]) -> torch.Tensor:
        """The batch's streamed view as a float clip (B, C, T, H, W), before the frame input."""
        names = batch.get("view_names") or []
        return to_clip(view(batch, self.view_name) if self.view_name in names else batch["views"][0])

    def clip_inputs(self, batch: dict[str, Any]) -> torch.Tensor:
        return frame_inputs(self.view_clip(batch), self.frame_input, self.diff_scale)

    def reverse_in_time(self, clip: torch.Tensor, y: torch.Tensor,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The time-reversal augmentation on a float clip batch (B, C, T, H, W): each clip backwards with
        probability ``reverse_p``, its label mapped through ``reversed_class``; (clip, labels)."""
        if self.reverse_p <= 0:
            return clip, y
        flip = torch.rand(clip.shape[0], generator=generator) < self.reverse_p
        if not bool(flip.any()):
            return clip, y
        flip = flip.to(clip.device)
        mapped = torch.as_tensor(self.reversed_class, device=y.device)[y]
        clip = torch.where(flip[:, None, None, None, None], clip.flip(2), clip)
        return clip, torch.where(flip, mapped, y)

    def train_inputs(self, batch: dict[str, Any], generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(prepared clip, labels) for a training step: the view, time-reversed per ``reverse_p``, then the
        frame input (so a reversed clip's frame differences are those of the reversed clip)."""
        clip, y = self.reverse_in_time(self.view_clip(batch), batch["label"], generator)
        return frame_inputs(clip, self.frame_input, self.diff_scale), y

    @torch.no_grad()
    def reversal_pair_accuracy(self, clip: torch.Tensor, y: torch.Tensor, pair: tuple[int, int]) -> tuple[int, int]:
        """Two-way accuracy on a reversal pair of classes (e.g. translate left / right) with the position cue
        removed: every clip of ``pair`` is scored forwards (label y) and backwards (the other label), argmax
        over the pair's two logits, at the scored ticks whose newest input frame f has its mirror T−1−f among
        them. Each frame then counts once under each label, so a model whose output depends on one frame only
        scores exactly 1/2 (tested); above it, the model used the order of frames. ``clip`` is a float clip batch
        (B, C, T, H, W) before the frame input; returns (correct, scored), (0, 0) where no scored frame has its
        mirror (multi-rate clocks that hold the top output for several ticks, e.g. 1 1 2 4 over 16 frames)."""
        a, b = pair
        keep = (y == a) | (y == b)
        if not bool(keep.any()):
            return 0, 0
        clip, y = clip[keep], y[keep]
        other = torch.where(y == a, torch.full_like(y, b), torch.full_like(y, a))
        T, first = clip.shape[2], self.first_scored_tick()
        correct = scored = 0
        for c, labels in ((clip, y), (clip.flip(2), other)):
            logits, delays = self.online_logits(frame_inputs(c, self.frame_input, self.diff_scale))
            ticks = [t for t, lg in enumerate(logits) if lg is not None and t >= first]
            frames = {t - int(delays[t]) for t in ticks}
            for t in ticks:
                if T - 1 - (t - int(delays[t])) in frames:
                    two = logits[t][:, [a, b]].argmax(1)
                    correct += int((torch.where(two == 0, a, b) == labels).sum())
                    scored += int(labels.numel())
        return correct, scored

    def first_scored_tick(self) -> int:
        """Ticks before this are not scored: by default until the pipe is full (``L - 1``, later with lagged
        skips: :meth:`~videossl.models.pipelined.PipelinedEncoder.fill_ticks`)."""
        return self.encoder.fill_ticks() if self.warmup_ticks is None else int(self.warmup_ticks)

    def logits(self, out: torch.Tensor) -> torch.Tensor:
        return self.head(PipelinedEncoder.pool(out))

    def online_logits(self, x: torch.Tensor) -> tuple[list[torch.Tensor | None], list[int | None]]:
        """Per-tick logits (``None`` while the pipe fills) and delays of a prepared clip (B, C, T, H, W)."""
        if self.mode == "sequential":
            return [self.logits(self.encoder.sequential(x[:, :, t])) for t in range(x.shape[2])], [0] * x.shape[2]
        outs, delays = self.encoder.stream(x)
        return [None if o is None else self.logits(o) for o in outs], delays

    def _loss_fn(self, y: torch.Tensor, n_scored: int, record: list):
        first = self.first_scored_tick()

        def loss_fn(z: torch.Tensor, t: int) -> torch.Tensor | None:
            if t < first:
                return None
            logits = self.logits(z)
            record.append((logits.argmax(1) == y).float().mean().detach())
            return F.cross_entropy(logits, y) / n_scored
        return loss_fn

    def _trainable(self) -> list[tuple[str, nn.Parameter]]:
        return [(f"encoder.{n}", p) for n, p in self.encoder.named_parameters() if p.requires_grad] + \
               [(f"head.{n}", p) for n, p in self.head.named_parameters()]

    def _set_grads(self, grads: dict[str, torch.Tensor]) -> None:
        head = list(self.head.parameters())
        for n, p in self.encoder.named_parameters():
            g = grads.get(n)
            p.grad = None if g is None else g.detach().clone()
        for i, p in enumerate(head):
            g = grads.get(f"extra.{i}")
            p.grad = None if g is None else g.detach().clone()

    # -- steps ----------------------------------------------------------------------------------
    def train_clip(self, x: torch.Tensor, y: torch.Tensor, opt: Any) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """One clip's update with optimiser ``opt`` (per clip, or per tick in Sideways ``per_tick``): returns
        (loss summed over the scored ticks, mean training accuracy over them, extra scalars to log)."""
        T, head = x.shape[2], list(self.head.parameters())
        n_scored = max(T - self.first_scored_tick(), 1)
        acc: list[torch.Tensor] = []
        loss_fn = self._loss_fn(y, n_scored, acc)
        logs: dict[str, float] = {}
        if self.mode == "sequential":
            logits = torch.stack([self.logits(self.encoder.sequential(x[:, :, t])) for t in range(T)]).mean(0)
            loss = F.cross_entropy(logits, y)
            acc.append((logits.argmax(1) == y).float().mean())
            grads = torch.autograd.grad(loss, [p for _, p in self._trainable()], allow_unused=True)
            for (_, p), g in zip(self._trainable(), grads, strict=True):
                p.grad = g
            opt.step()
        elif self.mode == "bp":
            grads, losses = bp_clip_grads(self.encoder, x, loss_fn, head)
            loss = torch.stack(losses).sum()
            self._set_grads(grads)
            opt.step()
        else:
            step = self.global_step if self._trainer is not None else getattr(self, "_steps", 0)
            if self.cosine_every and step % self.cosine_every == 0:
                exact, _ = bp_clip_grads(self.encoder, x, self._loss_fn(y, n_scored, []), head)
                approx, _ = sideways_clip_grads(self.encoder, x, self._loss_fn(y, n_scored, []), head)
                logs = {f"cos/{k}": v for k, v in grad_cosines(approx, exact).items()}
                if self.reversed_class is not None:
                    rev = self.reversal_grad_cosines(x, y, (approx, exact))
                    logs.update({f"cos_rev/{k}": v for k, v in rev.items()})
            if self.update == "per_clip":
                grads, losses = sideways_clip_grads(self.encoder, x, loss_fn, head)
                self._set_grads(grads)
                opt.step()
            else:
                state, losses = init_sideways(self.encoder), []
                for t in range(T):
                    r = sideways_tick(self.encoder, x[:, :, t], state, loss_fn, head)
                    if r.loss is not None:
                        losses.append(r.loss.detach())
                    if r.grads:
                        self._set_grads(r.grads)
                        opt.step()
            loss = torch.stack(losses).sum() if losses else torch.zeros(())
        self._steps = getattr(self, "_steps", 0) + 1
        return loss.detach(), (torch.stack(acc).mean() if acc else torch.zeros(())), logs

    def reversal_grad_cosines(self, x: torch.Tensor, y: torch.Tensor,
                              grads_y: tuple[dict, dict] | None = None) -> dict[str, float]:
        """Per-stage cosine between this mode's approximate and BP's exact weight gradient of G(x, y) − G(x,
        reversed_class[y]) (BP: backprop through the unrolled pipeline; the loss of every scored tick): the order
        signal when ``x`` holds each clip with its reversal, the label-dependent part otherwise. ``grads_y``:
        the (approximate, exact) G(x, y) when the caller has them already. Needs ``reversed_class``."""
        if self.reversed_class is None:
            raise VideosslError("reversal_grad_cosines needs reversed_class")
        T, head = x.shape[2], list(self.head.parameters())
        n_scored = max(T - self.first_scored_tick(), 1)
        y_rev = torch.as_tensor(self.reversed_class, device=y.device)[y]
        diffs = []
        for i, fn in enumerate((sideways_clip_grads, bp_clip_grads)):
            g = grads_y[i] if grads_y is not None else fn(self.encoder, x, self._loss_fn(y, n_scored, []), head)[0]
            g_rev, _ = fn(self.encoder, x, self._loss_fn(y_rev, n_scored, []), head)
            diffs.append({n: g[n] - g_rev[n] for n in g if n in g_rev})
        return grad_cosines(diffs[0], diffs[1])

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        opt, sched = self.optimizers(), self.lr_schedulers()
        x, y = self.train_inputs(batch, self.step_generator() if self.reverse_p > 0 else None)
        loss, acc, logs = self.train_clip(x, y, opt)
        if sched is not None:
            sched.step()
        bs = y.shape[0]
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=bs)
        self.log("train/acc", acc, on_step=False, on_epoch=True, batch_size=bs)
        for k, v in logs.items():
            self.log(f"train/{k}", v, on_step=True, on_epoch=False, batch_size=bs)
        return loss

    @torch.no_grad()
    def online_accuracy(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Online accuracy (every scored tick; for ``sequential`` the clip's mean logit), last-tick and clip
        accuracy, and the accuracy at each frame index (NaN before the first scored tick)."""
        logits, _ = self.online_logits(x)
        first = self.first_scored_tick()
        per_frame = torch.full((len(logits),), float("nan"))
        for t, lg in enumerate(logits):
            if lg is not None and t >= first:
                per_frame[t] = (lg.argmax(1) == y).float().mean()
        scored = [lg for t, lg in enumerate(logits) if lg is not None and t >= first]
        clip_acc = (torch.stack(scored).mean(0).argmax(1) == y).float().mean()
        online = clip_acc if self.mode == "sequential" else per_frame[first:].nanmean()
        return {"acc": online, "acc_last_tick": per_frame[-1], "acc_clip": clip_acc, "per_frame": per_frame}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        x, y = self.clip_inputs(batch), batch["label"]
        keep = ~batch["duplicate"] if "duplicate" in batch else torch.ones_like(y, dtype=torch.bool)
        if not bool(keep.any()):
            return
        r = self.online_accuracy(x[keep], y[keep])
        n = int(keep.sum())
        self.log("val/acc", r["acc"], on_epoch=True, prog_bar=True, batch_size=n, sync_dist=True)
        self.log("val/acc_last_tick", r["acc_last_tick"], on_epoch=True, batch_size=n, sync_dist=True)
        self.log("val/acc_clip", r["acc_clip"], on_epoch=True, batch_size=n, sync_dist=True)

    def eval_features(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.encoder(self.clip_inputs(batch))

    def hparams_dict(self) -> dict[str, Any]:
        return {**super().hparams_dict(), "num_classes": self.classes, "mode": self.mode, "update": self.update}
