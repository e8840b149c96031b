"""Rank / worker partitioning of one epoch's global sample order (see :mod:`videossl.data.loader.dataset`):
equal whole batches per rank, disjoint worker ranges, and the plan that resumes mid-epoch exactly."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

from videossl.errors import VideosslError

__all__ = ["WorkerPlan", "batches_per_rank", "plan_worker", "resolve_rank", "resume_plan"]


def resolve_rank(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world_size): explicit, else torch.distributed, else env RANK / WORLD_SIZE, else (0, 1)."""
    if rank is None or world_size is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            r, w = torch.distributed.get_rank(), torch.distributed.get_world_size()
        else:
            r, w = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        rank = r if rank is None else rank
        world_size = w if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise VideosslError(f"invalid rank {rank} for world_size {world_size}")
    return int(rank), int(world_size)


def _even(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


@dataclass(frozen=True)
class WorkerPlan:
    start: int  # first global position of this worker's own range
    real: int  # positions read from its own range
    quota: int  # samples it yields (a multiple of batch_size)


def plan_worker(total: int, rank: int, world_size: int, worker: int, num_workers: int, batch_size: int,
                train: bool) -> WorkerPlan:
    """This worker's range of the global order and its quota (see the module docstring)."""
    if train:
        nb = (total // world_size) // batch_size
        per_worker = [b * batch_size for b in _even(nb, num_workers)]
        start = rank * nb * batch_size + sum(per_worker[:worker])
        return WorkerPlan(start, per_worker[worker], per_worker[worker])
    rank_sizes = _even(total, world_size)
    nb = math.ceil(max(rank_sizes) / batch_size)
    quotas = [b * batch_size for b in _even(nb, num_workers)]
    before = sum(quotas[:worker])
    real = max(0, min(quotas[worker], rank_sizes[rank] - before))
    start = sum(rank_sizes[:rank]) + min(before, rank_sizes[rank])
    return WorkerPlan(start, real, quotas[worker])


def resume_plan(skip_batches: int, total: int, world_size: int, num_workers: int, batch_size: int,
                train: bool) -> list[tuple[int, int]]:
    """For each DataLoader worker: (the worker plan it plays, how many of that plan's batches it drops).

    A DataLoader takes batches from its workers round-robin starting at worker 0, passing over
    exhausted ones, and the worker plans' quotas differ by at most one batch, larger first
    (:func:`plan_worker`). After ``skip_batches`` batches the next one belongs to some plan ``l``;
    so that a restarted loader continues the uninterrupted order exactly, worker 0 plays plan
    ``l``, worker 1 the plan after it, and so on, each dropping the batches of its plan that were
    already consumed. With ``skip_batches=0`` this is the identity with no drops.
    """
    workers = max(num_workers, 1)
    remaining = [plan_worker(total, 0, world_size, w, workers, batch_size, train).quota // batch_size for w in range(workers)]
    drops = [0] * workers
    order: list[int] = []  # owners of the global batch sequence, round-robin over non-exhausted plans
    left = list(remaining)
    while any(left):
        for w in range(workers):
            if left[w]:
                left[w] -= 1
                order.append(w)
    for w in order[:skip_batches]:
        drops[w] += 1
    nxt = []
    for w in order[skip_batches:]:
        if w not in nxt:
            nxt.append(w)
        if len(nxt) == workers:
            break
    finished = [w for w in range(workers) if w not in nxt]  # fully consumed plans: drop everything
    return [(w, drops[w]) for w in nxt + finished]


def batches_per_rank(total: int, world_size: int, batch_size: int, train: bool) -> int:
    if train:
        return (total // world_size) // batch_size
    return math.ceil(math.ceil(total / world_size) / batch_size)
