"""Online (streaming) evaluation of a pipelined model: per-frame predictions with their delay, accuracy at
each frame index, FLOPs per frame and frames/s / latency against the sequential model in the same run.

Massively Parallel Video Networks (arXiv 1806.03863 §3, §4): a depth-parallel network emits one prediction
per frame with a delay of ``d`` ticks; its cost per frame is ``sum_s cost_s / r_s``. The timings here run
every stage in one process, one after the other, so they measure the work per frame (clocks), not the
depth-parallel gain; that needs the stages on separate processes (``videossl.models.pipeline_dist``).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from videossl.models.pipelined import PipelinedEncoder

__all__ = ["flops_per_frame", "online_predictions", "timing"]


@torch.no_grad()
def online_predictions(model: Any, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """Per-tick predictions of a :class:`~videossl.methods.streaming.StreamingClassifier`-like ``model``
    (``online_logits(x) -> (logits per tick, delays)``) on a prepared clip batch: (B, T) predictions (-1 while
    the pipe fills), per-tick delays and (T,) correctness counts."""
    logits, delays = model.online_logits(x)
    B, T = x.shape[0], x.shape[2]
    pred = torch.full((B, T), -1, dtype=torch.long)
    for t, lg in enumerate(logits):
        if lg is not None:
            pred[:, t] = lg.argmax(1)
    correct = (pred == y[:, None]).sum(0)
    return {"pred": pred, "delays": delays, "correct": correct, "n": B}


@torch.no_grad()
def flops_per_frame(pipe: PipelinedEncoder, frame: torch.Tensor, ticks: int | None = None) -> dict[str, float]:
    """Measured FLOPs per tick of the full pipe (``FlopCounterMode`` over a whole number of clock periods),
    the expected ``sum_s cost_s / r_s`` and the sequential model's FLOPs per frame."""
    import math

    period = math.lcm(*pipe.clocks)
    ticks = ticks or period * max(1, 16 // period)
    state = pipe.init_state()
    for _ in range(pipe.num_stages * period):
        pipe.step(frame, state)
    with FlopCounterMode(display=False) as fc:
        for _ in range(ticks):
            pipe.step(frame, state)
    costs = pipe.stage_costs(frame)
    return {"measured": fc.get_total_flops() / ticks, "expected": sum(c / r for c, r in zip(costs, pipe.clocks, strict=True)),
            "sequential": float(sum(costs)), "stage_costs": costs}


@torch.no_grad()
def timing(pipe: PipelinedEncoder, frame: torch.Tensor, ticks: int = 64, repeats: int = 3) -> dict[str, float]:
    """Frames/s and latency (ms from a frame's arrival to the first output that depends on it) of the
    pipelined step and of the sequential per-frame model, measured in the same call (best of ``repeats``)."""
    def best(fn) -> float:
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times) / ticks

    state = pipe.init_state()
    for _ in range(pipe.num_stages):
        pipe.step(frame, state)
    tick = best(lambda: [pipe.step(frame, state) for _ in range(ticks)])
    seq = best(lambda: [pipe.sequential(frame) for _ in range(ticks)])
    delay = pipe.structural_delay()
    return {"pipelined_fps": 1.0 / tick, "sequential_fps": 1.0 / seq, "fps_ratio": seq / tick,
            "pipelined_latency_ms": 1e3 * tick * (delay + 1), "sequential_latency_ms": 1e3 * seq, "delay_ticks": delay}
