"""Stage groups of a :class:`~videossl.models.pipelined.PipelinedEncoder` on separate processes.

Each rank owns a contiguous group of stages. Every tick all ranks compute their stages at once (the
depth parallelism of arXiv 1806.03863 §3 made real); then each rank sends its top stage's new output up to
the next rank (read there at the next tick) and, when training Sideways (arXiv 2001.06232 §3), the delta
its bottom stage computed for the previous rank's top stage down (used there at the next tick). This is
exactly the single-process schedule, so outputs and gradients equal :func:`~videossl.models.sideways.
sideways_tick` / :meth:`PipelinedEncoder.step` on one process. Transport: ``torch.distributed``
``isend`` / ``irecv`` (gloo on CPU, NCCL on GPU); one message per link and tick, a small header (present,
newest frame) and the tensor's bytes, whose shape every rank knows from :func:`stage_shapes`. A group computes
its top stage first and sends it at once, so the message overlaps the group's other stages. Skips must stay
inside a group. :func:`balanced_groups` splits by measured per-stage FLOPs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import nn

from videossl.errors import VideosslError
from videossl.models.pipelined import PipelinedEncoder, StreamState
from videossl.models.sideways import Grads, LossFn, SidewaysState, TickResult, init_sideways, sideways_tick

__all__ = ["StageGroup", "balanced_groups", "split_groups", "stage_shapes"]

_HDR = 16


def split_groups(num_stages: int, world: int) -> list[list[int]]:
    """Contiguous, near-equal stage groups, one per rank."""
    if world > num_stages:
        raise VideosslError(f"{world} ranks for {num_stages} stages: at most one rank per stage")
    bounds = [round(i * num_stages / world) for i in range(world + 1)]
    return [list(range(bounds[i], bounds[i + 1])) for i in range(world)]


def balanced_groups(costs: Sequence[float], world: int) -> list[list[int]]:
    """Contiguous stage groups, one per rank, that minimise the largest group's cost (e.g. the FLOPs of
    :meth:`~videossl.models.pipelined.PipelinedEncoder.stage_costs`): a tick lasts as long as its slowest
    group. Returns one optimal split (which of several equal ones is not specified)."""
    n = len(costs)
    if world < 1:
        raise VideosslError(f"{world} ranks: need at least one")
    if world > n:
        raise VideosslError(f"{world} ranks for {n} stages: at most one rank per stage")
    pre = [0.0]
    for c in costs:
        pre.append(pre[-1] + float(c))
    # best[k][i]: (largest group cost, cuts) splitting stages [0, i) into k groups
    best: list[dict[int, tuple[float, tuple[int, ...]]]] = [{0: (0.0, ())}]
    for k in range(1, world + 1):
        row = {}
        for i in range(k, n - (world - k) + 1):
            row[i] = min((max(best[k - 1][j][0], pre[i] - pre[j]), best[k - 1][j][1] + (j,))
                         for j in best[k - 1] if j < i)
        best.append(row)
    cuts = best[world][n][1][1:] + (n,)
    bounds = (0,) + cuts
    return [list(range(bounds[i], bounds[i + 1])) for i in range(world)]


@torch.no_grad()
def stage_shapes(pipe: PipelinedEncoder, frame: torch.Tensor) -> list[tuple[int, ...]]:
    return [tuple(o.shape) for o in pipe.sequential_outputs(frame)]


class StageGroup:
    """This rank's part of a distributed pipeline (every rank holds the same ``pipe`` weights)."""

    def __init__(self, pipe: PipelinedEncoder, frame_like: torch.Tensor, groups: Sequence[Sequence[int]] | None = None,
                 rank: int | None = None, world: int | None = None) -> None:
        self.pipe = pipe
        self.rank = dist.get_rank() if rank is None else rank
        self.world = dist.get_world_size() if world is None else world
        self.groups = [list(g) for g in (groups or split_groups(pipe.num_stages, self.world))]
        self.owned = self.groups[self.rank]
        if pipe.lagged:
            raise VideosslError(f"lagged skips {pipe.lagged} are single-process only (their delay lines are not sent "
                                "between ranks)")
        for s, d in pipe.skips:
            if (s in self.owned) != (d in self.owned) and (s in self.owned or d in self.owned):
                raise VideosslError(f"skip ({s}, {d}) crosses stage groups {self.groups}: keep skips inside a group")
        self.shapes = stage_shapes(pipe, frame_like)
        self.top, self.bottom = self.owned[-1], self.owned[0]
        self.is_last, self.is_first = self.rank == self.world - 1, self.rank == 0
        self.dtype, self.device = frame_like.dtype, frame_like.device  # messages live where the stages run

    # -- transport --------------------------------------------------------------------------
    # One message per link and tick: a 16-byte header (present, newest frame; int64) and the tensor's bytes,
    # whose shape every rank knows. Up-messages carry tag 0, down-messages (Sideways deltas) tag 1.
    def _isend(self, x: torch.Tensor | None, newest: int | None, dst: int, shape: tuple[int, ...], tag: int):
        if x is not None and tuple(x.shape) != tuple(shape):
            raise VideosslError(f"stage output {tuple(x.shape)} on rank {self.rank} != {tuple(shape)} from the "
                                "frame this group was built for: build the StageGroup with the running batch shape")
        msg = self._buffer(shape)
        msg[:_HDR].view(torch.int64).copy_(torch.tensor([0 if x is None else 1, -1 if newest is None else newest]))
        if x is not None:
            msg[_HDR:].view(self.dtype).view(shape).copy_(x)
        return msg, dist.isend(msg, dst, tag=tag)

    def _irecv(self, src: int, shape: tuple[int, ...], tag: int):
        msg = self._buffer(shape)
        return msg, shape, dist.irecv(msg, src, tag=tag)

    def _buffer(self, shape: tuple[int, ...]) -> torch.Tensor:
        """One message's bytes: the header and a tensor of ``shape`` in the group's dtype, on its device."""
        return torch.empty(_HDR + math.prod(shape) * self.dtype.itemsize, dtype=torch.uint8, device=self.device)

    def _finish(self, pending) -> tuple[torch.Tensor | None, int | None]:
        msg, shape, req = pending
        req.wait()
        present, newest = msg[:_HDR].view(torch.int64).tolist()
        if not present:
            return None, None
        return msg[_HDR:].view(self.dtype).view(shape), (None if newest < 0 else newest)

    def _exchange(self, up: tuple[torch.Tensor | None, int | None], down: torch.Tensor | None,
                  want_down: bool) -> tuple[tuple[torch.Tensor | None, int | None] | None, torch.Tensor | None]:
        """Send (our top output, its newest frame) up and our bottom's delta down; receive the previous rank's
        top output and the next rank's delta for our top. All posted at once, then waited."""
        got_up = self._irecv(self.rank - 1, self.shapes[self.bottom - 1], 0) if not self.is_first else None
        got_down = self._irecv(self.rank + 1, self.shapes[self.top], 1) if not self.is_last and want_down else None
        sends = []
        if not self.is_last:
            sends.append(self._isend(*up, self.rank + 1, self.shapes[self.top], 0))
        if not self.is_first and want_down:
            sends.append(self._isend(down, None, self.rank - 1, self.shapes[self.bottom - 1], 1))
        up_in = None if got_up is None else self._finish(got_up)
        down_in = None if got_down is None else self._finish(got_down)[0]
        for _, req in sends:
            req.wait()
        return up_in, down_in

    def _write_boundary(self, state: StreamState, got_up) -> None:
        if not self.is_first and got_up is not None:
            buf, newest = got_up
            state.buffers[self.bottom - 1], state.newest[self.bottom - 1] = buf, newest

    # -- forward only -----------------------------------------------------------------------
    def init_state(self) -> StreamState:
        return self.pipe.init_state()

    @torch.no_grad()
    def step(self, frame: torch.Tensor | None, state: StreamState) -> tuple[torch.Tensor | None, int | None]:
        """One streaming tick of this group (``frame`` read on rank 0 only); the output on the last rank.

        The top stage is computed first and its output sent at once, so the message travels while the group's
        lower stages compute; the previous rank's output is received into the boundary buffer at the end of
        the tick (read at the next one). Same values as :meth:`PipelinedEncoder.step` on one process."""
        got_up = self._irecv(self.rank - 1, self.shapes[self.bottom - 1], 0) if not self.is_first else None
        sends, updates = [], {}
        for l in reversed(self.owned):  # noqa: E741
            u = self.pipe.stage_update(l, frame if self.is_first else None, state)
            if u is not None:
                updates[l] = u
            if l == self.top and not self.is_last:
                y, newest = u if u is not None else (state.buffers[l], state.newest[l])
                sends.append(self._isend(y, newest, self.rank + 1, self.shapes[l], 0))
        out, delay = self.pipe.advance(state, updates)
        if got_up is not None:
            self._write_boundary(state, self._finish(got_up))
        for _, req in sends:
            req.wait()
        return (out, delay) if self.is_last else (None, None)

    # -- Sideways ---------------------------------------------------------------------------
    def init_sideways(self) -> SidewaysState:
        return init_sideways(self.pipe)

    def sideways_tick(self, frame: torch.Tensor | None, state: SidewaysState, loss_fn: LossFn,
                      extra: Sequence[nn.Parameter] = ()) -> TickResult:
        r = sideways_tick(self.pipe, frame if self.is_first else None, state, loss_fn,
                          extra if self.is_last else (), owned=self.owned)
        down = None if self.is_first else state.deltas[self.bottom - 1]
        got_up, got_down = self._exchange((state.stream.buffers[self.top], state.stream.newest[self.top]), down,
                                          want_down=True)
        self._write_boundary(state.stream, got_up)
        if not self.is_first:
            state.deltas[self.bottom - 1] = None  # it lives on the previous rank now
        if not self.is_last:
            state.deltas[self.top] = got_down
        return r

    def sideways_clip(self, clip: torch.Tensor | None, num_ticks: int, loss_fn: LossFn,
                      extra: Sequence[nn.Parameter] = ()) -> Grads:
        """This group's Sideways weight gradients summed over a clip."""
        state, total = self.init_sideways(), {}
        for t in range(num_ticks):
            r = self.sideways_tick(None if clip is None else clip[:, :, t], state, loss_fn, extra)
            for n, g in r.grads.items():
                total[n] = total[n] + g if n in total else g
        return total
