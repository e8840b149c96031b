"""Optimiser and LR schedule from config: one definition for pre-training methods and fine-tuning.

AdamW, SGD, LARS (timm's) and RMSprop; linear warmup + cosine, step or constant schedule; per-parameter
LR multipliers (regex on the parameter name) and weight decay off for biases / norms. Pure
functions of (step, config), tested against hand computations. AdamW is the fused (one-kernel) CUDA
implementation when its parameters are on CUDA (``fused: auto``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from videossl.errors import VideosslError

OPTIMIZERS = ("adamw", "sgd", "lars", "rmsprop")
SCHEDULES = ("cosine", "step", "constant")


@dataclass
class OptimConfig:
    """Optimiser and schedule.

    ``lr`` is the peak LR at ``ref_batch_size``; the LR used is ``lr * global_batch / ref_batch_size``
    where global batch = per-device batch × devices × nodes × gradient accumulation (set
    ``ref_batch_size: null`` to use ``lr`` as is). ``warmup`` and ``total`` are in optimiser steps;
    a value in (0, 1) is a fraction of the run's steps; ``total: null`` = the whole run.
    """

    name: str = "adamw"
    lr: float = 1e-3
    ref_batch_size: int | None = 256
    weight_decay: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    trust_coefficient: float = 1e-3
    schedule: str = "cosine"
    warmup: float = 0.0
    total: float | None = None
    min_lr_ratio: float = 0.0
    step_every: int = 1000  # step schedule: multiply by step_gamma every step_every steps
    step_gamma: float = 0.5
    exclude_bias_and_norm: bool = True
    grad_multipliers: dict[str, float] = field(default_factory=dict)  # regex on param name -> x
    lr_multipliers: dict[str, float] = field(default_factory=dict)  # regex on param name -> LR x
    # AdamW's fused CUDA kernel: "auto" = fused when every parameter is on CUDA; true = fused (an error
    # off CUDA); false = torch's default (foreach) implementation. Other optimisers ignore it.
    fused: bool | str = "auto"

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise VideosslError(f"unknown optimizer {self.name!r}: choose one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise VideosslError(f"unknown schedule {self.schedule!r}: choose one of {', '.join(SCHEDULES)}")
        if self.lr <= 0:
            raise VideosslError(f"optim.lr must be positive, got {self.lr}")
        if self.fused not in (True, False, "auto"):
            raise VideosslError(f"optim.fused must be true, false or auto, got {self.fused!r}")


def _steps(value: float | None, total_steps: int) -> int:
    if value is None:
        return total_steps
    return int(round(value * total_steps)) if 0 < value < 1 else int(value)


def lr_factor(step: int, cfg: OptimConfig, total_steps: int) -> float:
    """Multiplier of the peak LR at optimiser step ``step`` (pure; tested)."""
    warmup = _steps(cfg.warmup, total_steps)
    total = max(_steps(cfg.total, total_steps), 1)
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        return cfg.step_gamma ** (step // max(cfg.step_every, 1))
    progress = min(max(step - warmup, 0) / max(total - warmup, 1), 1.0)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def is_bias_or_norm(name: str, param: nn.Parameter) -> bool:
    return param.ndim <= 1 or name.endswith(".bias")


def lr_multiplier(name: str, cfg: OptimConfig) -> float:
    """The LR multiplier of parameter ``name``: the first ``cfg.lr_multipliers`` regex that matches, else 1.

    With adaptive optimisers (AdamW, RMSprop) a gradient multiplier is normalised away, so BraVe's
    "predictor x10" becomes a 10x learning rate for the predictor there.
    """
    for pattern, mult in cfg.lr_multipliers.items():
        if re.search(pattern, name):
            return float(mult)
    return 1.0


def build_optimizer(named_params, cfg: OptimConfig, lr: float, extra_groups=()) -> torch.optim.Optimizer:
    named_params = [(n, p) for n, p in named_params if p.requires_grad]
    for pattern in cfg.lr_multipliers:
        if not any(re.search(pattern, n) for n, _ in named_params):
            raise VideosslError(f"optim.lr_multipliers: pattern {pattern!r} matches no parameter")
    buckets: dict[tuple[bool, float], list[nn.Parameter]] = {}
    for name, p in named_params:
        no_decay = cfg.exclude_bias_and_norm and is_bias_or_norm(name, p)
        buckets.setdefault((no_decay, lr_multiplier(name, cfg)), []).append(p)
    groups = []
    # plain groups first (param_groups[0] is the one whose LR is logged), then the multiplied ones;
    # weight_decay 0 also keeps biases / norms out of LARS' trust-ratio scaling (timm's Lars adapts
    # only groups with weight decay), as BraVe does for biases and BN parameters.
    for (no_decay, mult), params in sorted(buckets.items(), key=lambda kv: (kv[0][1] != 1.0, kv[0][0])):
        group = {"params": params, "weight_decay": 0.0 if no_decay else cfg.weight_decay}
        if mult != 1.0:
            group["lr"] = lr * mult
        groups.append(group)
    groups += list(extra_groups)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.betas), fused=use_fused(groups, cfg.fused))
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, momentum=cfg.momentum if cfg.momentum else 0.0)
    from timm.optim import Lars

    return Lars(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov, trust_coeff=cfg.trust_coefficient)


def use_fused(groups, fused: bool | str) -> bool | None:
    """Whether AdamW runs fused: ``auto`` = every parameter on CUDA; ``True`` off CUDA is an error.

    ``None`` (not ``False``) when not fused, so torch keeps choosing its default implementation."""
    devices = {p.device.type for g in groups for p in g["params"]}
    if fused == "auto":
        return True if devices == {"cuda"} else None
    if fused and devices - {"cuda"}:
        raise VideosslError(f"optim.fused: true needs every parameter on CUDA, found {', '.join(sorted(devices))} "
                            "(use fused: auto)")
    return True if fused else None


def lr_lambdas(opt: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int) -> list[Callable[[int], float]]:
    """One LR multiplier function per param group: the schedule, or 1 for groups marked ``fixed_lr``."""
    return [(lambda s: 1.0) if g.get("fixed_lr") else (lambda s: lr_factor(s, cfg, total_steps)) for g in opt.param_groups]


def step_scheduler(opt: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int) -> dict:
    """Lightning's ``lr_scheduler`` entry: the schedule of :func:`lr_lambdas`, stepped every optimiser step."""
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambdas(opt, cfg, total_steps))
    return {"scheduler": sched, "interval": "step"}
