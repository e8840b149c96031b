"""Stage groups of a :class:`~videossl.models.pipelined.PipelinedEncoder` on separate processes.

Each rank owns a contiguous group of stages. Every tick all ranks compute their stages at once (the
depth parallelism of arXiv 1806.03863 §3 made real); then each rank sends its top stage's new output up to
the next rank (read there at the next tick) and, when training Sideways (arXiv 2001.06232 §3), the delta
its bottom stage computed for the previous rank's top stage down (used there at the next tick). This is
exactly the single-process schedule, so outputs and gradients equal :func:`~videossl.models.sideways.
sideways_tick` / :meth:`PipelinedEncoder.step` on one process. Transport: ``torch.distributed``
``isend`` / ``irecv`` (gloo on CPU, NCCL on GPU); each message is a small header (present, newest frame)
and the tensor, whose shape every rank knows from :func:`stage_shapes`. Skips must stay inside a group.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import nn

from videossl.errors import VideosslError
from videossl.models.pipelined import PipelinedEncoder, StreamState
from videossl.models.sideways import Grads, LossFn, SidewaysState, TickResult, init_sideways, sideways_tick

__all__ = ["StageGroup", "split_groups", "stage_shapes"]


def split_groups(num_stages: int, world: int) -> list[list[int]]:
    """Contiguous, near-equal stage groups, one per rank."""
    if world > num_stages:
        raise VideosslError(f"{world} ranks for {num_stages} stages: at most one rank per stage")
    bounds = [round(i * num_stages / world) for i in range(world + 1)]
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
        self.dtype = frame_like.dtype

    # -- transport --------------------------------------------------------------------------
    def _exchange(self, up: tuple[torch.Tensor | None, int | None], down: torch.Tensor | None,
                  want_down: bool) -> tuple[tuple[torch.Tensor | None, int | None] | None, torch.Tensor | None]:
        """Send (our top output, its newest frame) up and our bottom's delta down; receive the previous rank's
        top output and the next rank's delta for our top. All isend / irecv posted at once, then waited."""
        reqs, got_up, got_down = [], None, None
        hdr_in = torch.zeros(2, dtype=torch.long)
        dhdr_in = torch.zeros(1, dtype=torch.long)
        if not self.is_last:
            out, newest = up
            hdr = torch.tensor([0 if out is None else 1, -1 if newest is None else newest])
            reqs.append(dist.isend(hdr, self.rank + 1))
            if out is not None:
                reqs.append(dist.isend(out.contiguous(), self.rank + 1))
        if not self.is_first and want_down:
            dh = torch.tensor([0 if down is None else 1])
            reqs.append(dist.isend(dh, self.rank - 1))
            if down is not None:
                reqs.append(dist.isend(down.contiguous(), self.rank - 1))
        if not self.is_first:
            dist.recv(hdr_in, self.rank - 1)
            got_up = (None, None)
            if int(hdr_in[0]):
                buf = torch.empty(self.shapes[self.bottom - 1], dtype=self.dtype)
                dist.recv(buf, self.rank - 1)
                got_up = (buf, int(hdr_in[1]))
        if not self.is_last and want_down:
            dist.recv(dhdr_in, self.rank + 1)
            if int(dhdr_in[0]):
                got_down = torch.empty(self.shapes[self.top], dtype=self.dtype)
                dist.recv(got_down, self.rank + 1)
        for r in reqs:
            r.wait()
        return got_up, got_down

    def _write_boundary(self, state: StreamState, got_up) -> None:
        if not self.is_first and got_up is not None:
            buf, newest = got_up
            state.buffers[self.bottom - 1], state.newest[self.bottom - 1] = buf, newest

    # -- forward only -----------------------------------------------------------------------
    def init_state(self) -> StreamState:
        return self.pipe.init_state()

    @torch.no_grad()
    def step(self, frame: torch.Tensor | None, state: StreamState) -> tuple[torch.Tensor | None, int | None]:
        """One streaming tick of this group (``frame`` read on rank 0 only); the output on the last rank."""
        out, delay = self.pipe.step(frame if self.is_first else None, state, owned=self.owned)
        got_up, _ = self._exchange((state.buffers[self.top], state.newest[self.top]), None, want_down=False)
        self._write_boundary(state, got_up)
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
