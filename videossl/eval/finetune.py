"""Fine-tuning: the pretrained encoder + a dropout/linear head trained end to end, tested on many views.

* :class:`FinetuneConfig`: the finetune recipe (validated on load);
* :class:`VideoMixup`: batch-mode Mixup (Zhang et al., 2018) / CutMix (Yun et al., 2019) for clips
  (B, C, T, H, W), timm's ``Mixup`` semantics with the CutMix box cut from every frame;
* :func:`layer_decay_groups`: layer-wise LR decay (BEiT, Bao et al., 2022; VideoMAE 0.75, Tong et
  al., 2022) over the encoder's blocks in registration order;
* :class:`FinetuneModule` and :func:`finetune`: the Lightning loop, multi-view test, the result row.

The protocol in full is the ``videossl eval finetune`` help (:mod:`videossl.eval.commands.finetune`).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from videossl.core.optim import OptimConfig, build_optimizer, is_bias_or_norm, lr_factor
from videossl.data.loader.batch import to_clip
from videossl.data.loader.datamodule import VideoDataModule
from videossl.data.shards.format import load_manifest
from videossl.errors import VideosslError
from videossl.eval import calibration as cal
from videossl.eval.features import gather_rows
from videossl.eval.plots import plot_per_class_accuracy, plot_reliability_diagram, plot_risk_coverage
from videossl.eval.report import abstention_sweep, confidence_metrics
from videossl.eval.scores import aggregate_views, per_class_accuracy, top_k_accuracy

__all__ = ["FinetuneConfig", "FinetuneModule", "MixupConfig", "VideoMixup", "finetune", "layer_blocks",
           "layer_decay_groups", "protocol_lines", "smooth_one_hot"]

# ------------------------------------------------------------------------------------------ config
@dataclass
class MixupConfig:
    mixup_alpha: float = 0.8
    cutmix_alpha: float = 1.0
    prob: float = 1.0  # probability of mixing a batch at all
    switch_prob: float = 0.5  # probability of CutMix instead of Mixup when both are on


@dataclass
class FinetuneConfig:
    data_dir: str = "data/synth"
    split: int | str | None = None
    train_split: str = "train"
    test_split: str = "test"
    train_views: list[dict[str, Any]] = field(default_factory=lambda: [
        {"name": "clip", "sampler": "random", "frames": 8, "stride": 1, "size": 48, "augment": {"flip_p": 0.0}}])
    test_views: list[dict[str, Any]] = field(default_factory=lambda: [
        {"name": "clip", "sampler": "uniform", "frames": 8, "stride": 1, "size": 48, "train": False,
         "num_clips": 2, "crops": 1}])
    batch_size: int = 16
    eval_batch_size: int | None = None
    num_workers: int = 0
    decoder: str = "auto"
    shuffle_buffer: int = 64
    epochs: int = 10
    optim: dict[str, Any] = field(default_factory=lambda: {"name": "sgd", "lr": 0.1, "weight_decay": 0.0,
                                                           "schedule": "cosine"})
    layer_decay: float | None = None
    head_dropout: float = 0.5
    label_smoothing: float = 0.0
    mixup: MixupConfig | None = None
    aggregate: str = "mean_logits"  # mean_logits | mean_softmax
    tau: float = 0.8
    taus: list[float] = field(default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9])
    trainer: dict[str, Any] = field(default_factory=dict)  # extra pl.Trainer arguments (accelerator, devices, ...)
    encoder: dict[str, Any] | None = None
    seed: int = 0
    pretrain: str = ""
    name: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FinetuneConfig:
        d = dict(d)
        bad = sorted(set(d) - set(cls.__dataclass_fields__))
        if bad:
            raise VideosslError(f"unknown key(s) in finetune config: {', '.join(bad)} "
                                f"(valid: {', '.join(sorted(cls.__dataclass_fields__))})")
        mix = d.pop("mixup", None)
        if mix is not None:
            mbad = sorted(set(mix) - set(MixupConfig.__dataclass_fields__))
            if mbad:
                raise VideosslError(f"unknown key(s) in mixup config: {', '.join(mbad)}")
            mix = MixupConfig(**mix)
        cfg = cls(mixup=mix, **d)
        OptimConfig(**cfg.optim)  # validates names / values now, not after the data is read
        if cfg.epochs < 1:
            raise VideosslError(f"epochs must be >= 1, got {cfg.epochs}")
        if cfg.layer_decay is not None and not 0 < cfg.layer_decay <= 1:
            raise VideosslError(f"layer_decay must be in (0, 1], got {cfg.layer_decay}")
        if cfg.aggregate not in ("mean_logits", "mean_softmax"):
            raise VideosslError(f"aggregate must be 'mean_logits' or 'mean_softmax', got {cfg.aggregate!r}")
        if not 0 <= cfg.head_dropout < 1 or not 0 <= cfg.label_smoothing < 1:
            raise VideosslError("head_dropout and label_smoothing must be in [0, 1)")
        return cfg

    @property
    def dataset_name(self) -> str:
        return self.name or Path(self.data_dir).name


# ------------------------------------------------------------------------------------ mixup/cutmix
def smooth_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    off = smoothing / num_classes
    out = torch.full((labels.shape[0], num_classes), off, device=labels.device)
    return out.scatter_(1, labels[:, None], 1.0 - smoothing + off)


class VideoMixup:
    """Batch-mode Mixup / CutMix for clips (B, C, T, H, W); see the module docstring.

    ``__call__(x, labels) -> (mixed x, soft targets)``; the batch size must be even (as in timm).
    """

    def __init__(self, num_classes: int, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0, prob: float = 1.0,
                 switch_prob: float = 0.5, label_smoothing: float = 0.1, seed: int = 0):
        if mixup_alpha < 0 or cutmix_alpha < 0 or not 0 <= prob <= 1 or not 0 <= switch_prob <= 1:
            raise VideosslError("mixup: alphas must be >= 0 and prob/switch_prob in [0, 1]")
        self.num_classes, self.mixup_alpha, self.cutmix_alpha = num_classes, mixup_alpha, cutmix_alpha
        self.prob, self.switch_prob, self.label_smoothing = prob, switch_prob, label_smoothing
        self.rng = np.random.default_rng(seed)

    def _beta(self, alpha: float) -> float:
        return float(self.rng.beta(alpha, alpha))

    def _rand(self) -> float:
        return float(self.rng.random())

    def params(self) -> tuple[float, bool]:
        """(λ, use_cutmix) for one batch; λ = 1 means no mixing."""
        if self._rand() >= self.prob or (self.mixup_alpha <= 0 and self.cutmix_alpha <= 0):
            return 1.0, False
        cut = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or self._rand() < self.switch_prob)
        return self._beta(self.cutmix_alpha if cut else self.mixup_alpha), cut

    def cut_box(self, lam: float, h: int, w: int) -> tuple[int, int, int, int]:
        """timm's ``rand_bbox``: a box of area ≈ (1 − λ)·H·W centred uniformly, clipped to the frame."""
        ratio = math.sqrt(1 - lam)
        ch, cw = int(h * ratio), int(w * ratio)
        cy, cx = int(self.rng.integers(0, h)), int(self.rng.integers(0, w))
        return max(cy - ch // 2, 0), min(cy + ch // 2, h), max(cx - cw // 2, 0), min(cx + cw // 2, w)

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 5:
            raise VideosslError(f"VideoMixup expects clips (B, C, T, H, W), got shape {tuple(x.shape)}")
        if x.shape[0] % 2:
            raise VideosslError(f"mixup/cutmix needs an even batch size, got {x.shape[0]}")
        lam, cut = self.params()
        if lam < 1.0:
            if cut:
                y0, y1, x0, x1 = self.cut_box(lam, x.shape[-2], x.shape[-1])
                x = x.clone()
                x[..., y0:y1, x0:x1] = x.flip(0)[..., y0:y1, x0:x1]
                lam = 1 - (y1 - y0) * (x1 - x0) / (x.shape[-2] * x.shape[-1])
            else:
                x = x * lam + x.flip(0) * (1 - lam)
        y = smooth_one_hot(labels, self.num_classes, self.label_smoothing)
        return x, y * lam + y.flip(0) * (1 - lam)


# ------------------------------------------------------------------------------- layer-wise decay
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _opens(mod: nn.Module) -> bool:
    if isinstance(mod, _CONTAINERS):
        return True
    with_params = [c for c in mod.children() if any(True for _ in c.parameters())]
    own = any(True for _ in mod.parameters(recurse=False))
    return not own and len(with_params) == 1 and isinstance(with_params[0], _CONTAINERS)


def layer_blocks(encoder: nn.Module) -> list[tuple[str, list[tuple[str, nn.Parameter]]]]:
    """The encoder's parameters cut into blocks, in order (see the module docstring)."""
    blocks: dict[str, list[tuple[str, nn.Parameter]]] = {}
    for name, p in encoder.named_parameters():
        parts, mod, path = name.split(".")[:-1], encoder, []
        for part in parts:
            mod = mod._modules[part]
            path.append(part)
            if not _opens(mod):
                break
        blocks.setdefault(".".join(path) or "<root>", []).append((name, p))
    merged: list[tuple[str, list[tuple[str, nn.Parameter]]]] = []
    for key, params in blocks.items():
        if merged and all(p.ndim <= 1 for _, p in params):
            merged[-1][1].extend(params)
        else:
            merged.append((key, list(params)))
    return merged


def layer_decay_groups(encoder: nn.Module, head: nn.Module, lr: float, weight_decay: float, decay: float | None,
                       exclude_bias_and_norm: bool = True) -> list[dict[str, Any]]:
    """Optimizer parameter groups with per-layer ``lr`` (``layer_decay``) and no decay for bias/norm."""
    blocks = layer_blocks(encoder) + [("head", list(head.named_parameters()))]
    n = len(blocks) - 1
    groups = []
    for i, (key, params) in enumerate(blocks):
        scale = 1.0 if decay is None else decay ** (n - i)
        dec = [p for name, p in params if p.requires_grad and not (exclude_bias_and_norm and is_bias_or_norm(name, p))]
        nodec = [p for name, p in params if p.requires_grad and exclude_bias_and_norm and is_bias_or_norm(name, p)]
        for ps, wd in ((dec, weight_decay), (nodec, 0.0)):
            if ps:
                groups.append({"params": ps, "lr": lr * scale, "weight_decay": wd, "lr_scale": scale,
                               "layer": key, "layer_id": i})
    return groups


# ------------------------------------------------------------------------------------------ module
class FinetuneModule(pl.LightningModule):
    """Encoder + dropout + linear head, trained with (soft-target) cross-entropy; multi-view test."""

    def __init__(self, encoder: nn.Module, num_classes: int, optim: OptimConfig, *, layer_decay: float | None = None,
                 head_dropout: float = 0.5, label_smoothing: float = 0.0, mixup: MixupConfig | None = None,
                 seed: int = 0) -> None:
        super().__init__()
        self.encoder = encoder
        dim = getattr(encoder, "feature_dim", None)
        if dim is None:
            raise VideosslError(f"encoder {type(encoder).__name__} has no feature_dim attribute")
        self.head = nn.Sequential(nn.Dropout(head_dropout), nn.Linear(int(dim), num_classes))
        nn.init.trunc_normal_(self.head[1].weight, std=0.01)
        nn.init.zeros_(self.head[1].bias)
        self.num_classes, self.optim_cfg = num_classes, optim
        self.layer_decay, self.label_smoothing = layer_decay, label_smoothing
        self.mixup = (VideoMixup(num_classes, mixup.mixup_alpha, mixup.cutmix_alpha, mixup.prob, mixup.switch_prob,
                                 label_smoothing, seed) if mixup else None)
        self.test_rows: list[tuple[str, torch.Tensor, int]] = []
        self._rows: list[tuple[str, torch.Tensor, int]] = []

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(clip))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        x, y = to_clip(batch["views"][0]), batch["label"]
        if (y < 0).any():
            raise VideosslError("fine-tuning needs labelled videos: the train split has label -1")
        if self.mixup is not None:
            x, target = self.mixup(x, y)
            loss = torch.sum(-target * F.log_softmax(self(x), dim=1), dim=1).mean()
        else:
            logits = self(x)
            loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
            self.log("train/acc", (logits.argmax(1) == y).float().mean(), prog_bar=True, batch_size=len(y))
        self.log("train/loss", loss, prog_bar=True, batch_size=len(y))
        return loss

    def on_test_epoch_start(self) -> None:
        self._rows = []

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits = torch.stack([self(to_clip(v)).float().cpu() for v in batch["views"]], 1)  # (B, V, C)
        keep = (~batch["duplicate"]).tolist()
        for i, key in enumerate(batch["key"]):
            if keep[i]:
                self._rows.append((key, logits[i], int(batch["label"][i])))

    def on_test_epoch_end(self) -> None:
        self.test_rows = gather_rows(self._rows, self.trainer.world_size if self.trainer else 1)

    def configure_optimizers(self):
        cfg = self.optim_cfg
        trainer = self.trainer
        world = trainer.world_size * trainer.accumulate_grad_batches if trainer is not None else 1
        batch = getattr(trainer.datamodule, "batch_size", 1) if trainer is not None and trainer.datamodule else 1
        lr = cfg.lr * batch * world / cfg.ref_batch_size if cfg.ref_batch_size else cfg.lr
        groups = layer_decay_groups(self.encoder, self.head, lr, cfg.weight_decay, self.layer_decay,
                                    cfg.exclude_bias_and_norm)
        opt = build_optimizer([], cfg, lr, extra_groups=groups)
        total = max(int(trainer.estimated_stepping_batches), 1) if trainer is not None else 1
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, cfg, total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


# ------------------------------------------------------------------------------------------ running
def finetune(encoder: nn.Module, cfg: FinetuneConfig, out_dir: Path, name: str, device: str = "cpu",
             progress: bool = True) -> dict[str, Any]:
    """Fine-tune ``encoder`` on ``cfg``'s train split, test on its test split; the result row (rank 0)."""

    manifest = load_manifest(cfg.data_dir)
    classes = list(manifest.get("classes") or [])
    if not classes:
        raise VideosslError(f"{cfg.data_dir}/manifest.json has no class list: fine-tuning needs labelled data")
    for split in (cfg.train_split, cfg.test_split):
        if split not in manifest["splits"] or not int(manifest["splits"][split].get("num_samples", 0)):
            raise VideosslError(f"split {split!r} of {cfg.data_dir} has no samples")
    train_pc = manifest["splits"][cfg.train_split].get("per_class") or {}
    test_pc = manifest["splits"][cfg.test_split].get("per_class") or {}
    unseen = [c for c, n in test_pc.items() if n and not train_pc.get(c)]
    if train_pc and unseen:
        raise VideosslError(
            f"{len(unseen)} test class(es) never occur in the train split, so the classifier cannot learn them: "
            f"{unseen[:5]}{' ...' if len(unseen) > 5 else ''}; check the split files / class list of {cfg.data_dir}"
        )
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = VideoDataModule(cfg.data_dir, train_split=cfg.train_split, val_split=None, test_split=cfg.test_split,
                         batch_size=cfg.batch_size, eval_batch_size=cfg.eval_batch_size, num_workers=cfg.num_workers,
                         train_views=cfg.train_views, eval_views=cfg.test_views, decoder=cfg.decoder,
                         shuffle_buffer=cfg.shuffle_buffer, seed=cfg.seed, num_classes=len(classes))
    module = FinetuneModule(encoder, len(classes), OptimConfig(**cfg.optim), layer_decay=cfg.layer_decay,
                            head_dropout=cfg.head_dropout, label_smoothing=cfg.label_smoothing, mixup=cfg.mixup,
                            seed=cfg.seed)
    tkw = {"accelerator": "gpu" if device.startswith("cuda") else "cpu", "devices": 1, "logger": False,
           "enable_checkpointing": False, "enable_model_summary": False, "enable_progress_bar": progress,
           "num_sanity_val_steps": 0, "default_root_dir": str(out_dir), "log_every_n_steps": 1}
    tkw.update(cfg.trainer)
    tkw["max_epochs"] = cfg.epochs
    trainer = pl.Trainer(**tkw)
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    t_train = time.perf_counter() - t0
    trainer.test(module, datamodule=dm, verbose=False)
    if not trainer.is_global_zero:
        return {}
    rows = module.test_rows
    if not rows:
        raise VideosslError(f"split {cfg.test_split!r} of {cfg.data_dir} yielded no videos: nothing to evaluate")
    logits = torch.cat([r[1] for r in rows])
    ids = [k for k, lg, _ in rows for _ in range(lg.shape[0])]
    labels = torch.tensor([lab for _, lg, lab in rows for _ in range(lg.shape[0])])
    vpv = int(rows[0][1].shape[0])
    agg = aggregate_views(logits, ids, how=cfg.aggregate, labels=labels, views_per_video=vpv)
    scores, y = agg.values, agg.labels
    assert y is not None
    pc = per_class_accuracy(scores, y, len(classes))
    correct = scores.argmax(1) == y
    probs = scores if cfg.aggregate == "mean_softmax" else scores.softmax(1)
    kappas = {"msp": probs.max(1).values, "margin": cal.margin(scores.log() if cfg.aggregate == "mean_softmax" else scores)}
    conf_metrics = {k: confidence_metrics(v, correct, cfg.tau, probability=k != "margin") for k, v in kappas.items()}
    conf = kappas["msp"]
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = {
        "per_class": str(plot_per_class_accuracy(pc, out_dir / f"{name}-per_class.png", class_names=classes,
                                                 title=f"{name}: per-class accuracy")),
        "reliability": str(plot_reliability_diagram(conf, correct, out_dir / f"{name}-reliability.png", title=name)[0]),
        "risk_coverage": str(plot_risk_coverage(conf, correct, out_dir / f"{name}-risk_coverage.png", tau=cfg.tau,
                                                title=name)),
    }
    torch.save({**{f"encoder.{k}": v.detach().cpu() for k, v in module.encoder.state_dict().items()},
                **{f"head.{k}": v.detach().cpu() for k, v in module.head.state_dict().items()}},
               out_dir / f"{name}-finetuned.pt")
    msp = conf_metrics["msp"]
    return {
        "name": name,
        "top1": top_k_accuracy(scores, y, 1),
        "top5": top_k_accuracy(scores, y, 5) if len(classes) >= 5 else None,
        "mean_class_accuracy": float(pc[~pc.isnan()].mean()),
        "per_class": {c: (None if a != a else float(a)) for c, a in zip(classes, pc.tolist(), strict=True)},
        "ece": msp["ece"], "auroc": msp["auroc"], "aurc": msp["aurc"], "e_aurc": msp["e_aurc"],
        "tau": cfg.tau, "coverage_at_tau": msp["coverage_at_tau"], "risk_at_tau": msp["risk_at_tau"],
        "confidence": conf_metrics,
        "abstention": {"msp": abstention_sweep(conf, correct, cfg.taus)},
        "learned_confidence": "not fitted for fine-tuning (no held-out train videos)",
        "num_train_videos": int(manifest["splits"][cfg.train_split]["num_samples"]),
        "num_test_videos": len(agg.video_ids),
        "views_per_video": vpv,
        "epochs": cfg.epochs,
        "steps": int(trainer.global_step),
        "seconds_train": round(t_train, 1),
        "weights": str(out_dir / f"{name}-finetuned.pt"),
        "plots": plots,
    }


def protocol_lines(cfg: FinetuneConfig, spec: dict[str, Any], weights: list[str]) -> list[str]:
    """The protocol block; ``weights``: the weights lines (:meth:`videossl.eval.runs.WeightsInfo.lines`)."""
    tv, v = cfg.train_views[0], cfg.test_views[0]
    o = OptimConfig(**cfg.optim)
    views = sum(x.get("num_clips", 1) * x.get("crops", 1) for x in cfg.test_views)
    mix = (f"mixup α {cfg.mixup.mixup_alpha} / cutmix α {cfg.mixup.cutmix_alpha} (p {cfg.mixup.prob}, "
           f"switch {cfg.mixup.switch_prob})" if cfg.mixup else "no mixup/cutmix")
    return [
        f"backbone: {spec.get('class_path')} {json.dumps(spec.get('init_args', {}), sort_keys=True)}; "
        "fine-tuned end to end with a dropout + linear head",
        f"train clips: {tv.get('frames')} x {tv.get('stride')} at {tv.get('size')} ({tv.get('sampler', 'random')}, augmented)",
        f"test views per video: {views} ({v.get('num_clips', 1)} clips x {v.get('crops', 1)} crops) of "
        f"{v.get('frames')} x {v.get('stride')} at {v.get('size')} (resize {v.get('resize') or v.get('size')}); "
        f"aggregation {cfg.aggregate}",
        f"optimiser: {o.name}, lr {o.lr} at batch {o.ref_batch_size}, wd {o.weight_decay}, {o.schedule}, "
        f"warmup {o.warmup}; {cfg.epochs} epochs, batch {cfg.batch_size}",
        f"layer-wise lr decay: {cfg.layer_decay if cfg.layer_decay is not None else 'off'}; head dropout "
        f"{cfg.head_dropout}; label smoothing {cfg.label_smoothing}; {mix}",
        f"data: {cfg.data_dir}, train split '{cfg.train_split}', test split '{cfg.test_split}'",
        f"pretraining: {cfg.pretrain or 'see run config'}",
        *weights,
    ]
