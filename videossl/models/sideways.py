"""Training rules over a :class:`~videossl.models.pipelined.PipelinedEncoder`, as functions of tensors.

* **BP** (:func:`bp_clip_grads`): synchronous backprop through the pipeline unrolled over a clip; the exact
  gradient of the summed per-tick loss of the causal pipelined network.
* **Sideways** (Malinowski et al., CVPR 2020, arXiv 2001.06232, §3 "Sideways"): each stage is its own
  autograd graph on *detached* inputs. At tick ``t`` stage ``l`` holds its current input (from a newer
  frame) and the delta it received at tick ``t-1`` (from an older frame); it computes its weight gradient
  and the delta for its producers as ``torch.autograd.grad(out, (inp, *params), grad_outputs=delta)``, then
  both buffers are overwritten. The top stage uses the delta of the loss at the current tick, so the delta
  reaching stage ``l`` (1-indexed) belongs to a frame ``2(L - l)`` ticks older than its input.
* **Skip-Sideways** (Malinowski et al., CVPR 2021, arXiv 2106.08318, §3): the same rule on a pipeline with
  skip edges; a stage's incoming delta is the sum of the deltas its consumers produced at the previous tick.
  A lagged skip's delta is dropped: it belongs to an output its source wrote ``lag`` ticks before the one the
  main path read, and Sideways keeps no old activations to apply it to. Applied to the source's current input
  instead (frames ``2 + lag`` or more apart), it stopped the lagged network from learning translate left vs
  right at all (exactly 50 % on the reversal pair, with a 10x lower LR below the top too); dropped, it learns
  it to 99-100 % like BP (BENCHMARKS.md, "Streaming", session 13). Sideways therefore equals per-frame BP
  with the delay lines' reads detached (``per_frame_bp_grads(..., lagged_grad=False)``).

:func:`sideways_tick` is one tick of both (the pipeline's skips decide which); :func:`per_frame_bp_grads` is
backprop through the per-frame (sequential) model, which Sideways equals on a constant video once the pipe
is full both ways (``2L`` ticks); :func:`grad_cosines` compares two gradient dicts layer by layer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from videossl.errors import VideosslError
from videossl.models.pipelined import PipelinedEncoder, StreamState

__all__ = ["SidewaysState", "TickResult", "bp_clip_grads", "grad_cosines", "per_frame_bp_grads", "sideways_clip_grads",
           "sideways_tick", "stage_params"]

Grads = dict[str, torch.Tensor]
LossFn = Callable[[torch.Tensor, int], "torch.Tensor | None"]  # (top output, tick) -> loss, or None: not scored


@dataclass
class SidewaysState:
    """Forward buffers (detached) and, per stage, the delta for its output received at the previous tick."""

    stream: StreamState
    deltas: list[torch.Tensor | None] = field(default_factory=list)


@dataclass
class TickResult:
    output: torch.Tensor | None
    loss: torch.Tensor | None
    grads: Grads  # weight gradients of this tick (pipeline parameters by name, then ``extra`` as "extra.<i>")


def init_sideways(pipe: PipelinedEncoder) -> SidewaysState:
    return SidewaysState(stream=pipe.init_state(), deltas=[None] * pipe.num_stages)


def stage_params(pipe: PipelinedEncoder, stage: int) -> list[tuple[str, nn.Parameter]]:
    """The parameters stage ``stage``'s graph uses: its layers and the adapters of skips into it."""
    out = [(f"stages.{stage}.{n}", p) for n, p in pipe.stages[stage].named_parameters()]
    for key, m in pipe.adapters.items():
        if int(key.split("_")[1]) == stage:
            out += [(f"adapters.{key}.{n}", p) for n, p in m.named_parameters()]
    return [(n, p) for n, p in out if p.requires_grad]


def _add(grads: Grads, name: str, g: torch.Tensor | None) -> None:
    if g is None:
        return
    grads[name] = grads[name] + g if name in grads else g


def sideways_tick(pipe: PipelinedEncoder, frame: torch.Tensor | None, state: SidewaysState, loss_fn: LossFn,
                  extra: Sequence[nn.Parameter] = (), owned: Sequence[int] | None = None) -> TickResult:
    """One Sideways / Skip-Sideways tick: forward every stage on the previous tick's (detached) buffers, score
    the top output with ``loss_fn`` (whose parameters ``extra`` get their exact gradient), and move every
    stored delta one stage down against the stage's current input. ``state`` is updated in place.

    ``owned``: only these stages run (one stage group of a distributed pipeline); the driver writes the
    boundary buffers into ``state`` before a tick, and after it moves ``state.deltas`` across groups: the delta
    this group computed for another group's stage goes there, the one computed there for ours comes here."""
    if any(c != 1 for c in pipe.clocks):
        raise VideosslError(f"Sideways needs every clock at 1 (got {pipe.clocks}); train slow clocks with mode bp")
    st = state.stream
    t, old = st.t, st.buffers
    new, newest = list(old), list(st.newest)
    graphs: dict[int, tuple[list[torch.Tensor], torch.Tensor]] = {}
    for l, stage in enumerate(pipe.stages):  # noqa: E741
        if owned is not None and l not in owned:
            continue
        if l == 0:
            out = stage(frame.detach())
            graphs[0], new[0], newest[0] = ([], out), out.detach(), t
            continue
        srcs = pipe.inputs_of(l)
        if old[srcs[0]] is None:
            continue
        inputs = [None if old[s] is None else old[s].detach().requires_grad_(True) for s in srcs]
        x = pipe.combine(l, inputs)
        if x is None:  # a lagged skip's delay line is still filling
            continue
        out = stage(x)
        graphs[l] = ([x for x in inputs if x is not None], out)
        new[l] = out.detach()
        newest[l] = max(st.newest[s] for s in srcs if st.newest[s] is not None)
    pipe.shift_delay_lines(old, new)
    pipe.shift_delay_lines(st.newest, newest)
    st.buffers, st.newest, st.t = new, newest, t + 1

    grads: Grads = {}
    top = len(pipe.stages) - 1
    loss, deltas = None, list(state.deltas)
    if top in graphs:
        z = graphs[top][1].detach().requires_grad_(True)
        loss = loss_fn(z, t)
        if loss is not None:
            gs = torch.autograd.grad(loss, [z, *extra], allow_unused=True)
            deltas[top] = gs[0]
            for i, g in enumerate(gs[1:]):
                _add(grads, f"extra.{i}", g)
        else:
            deltas[top] = None
    received: list[torch.Tensor | None] = [None] * len(pipe.stages)
    for l in range(top, -1, -1):  # noqa: E741
        delta = deltas[l]
        if delta is None or l not in graphs:
            continue
        inputs, out = graphs[l]
        named = stage_params(pipe, l)
        gs = torch.autograd.grad(out, [*inputs, *(p for _, p in named)], grad_outputs=delta, allow_unused=True)
        srcs = [s for s in pipe.inputs_of(l) if old[s] is not None]
        for s, g in zip(srcs, gs[: len(inputs)], strict=True):
            if s >= len(pipe.stages):  # a delay line's delta is dropped (module docstring)
                continue
            if g is not None:  # summed over a producer's consumers (Skip-Sideways)
                received[s] = g if received[s] is None else received[s] + g
        for (n, _), g in zip(named, gs[len(inputs):], strict=True):
            _add(grads, n, g)
    state.deltas = received  # overwritten: next tick each stage uses what it received now
    return TickResult(output=graphs[top][1].detach() if top in graphs else None, loss=loss, grads=grads)


def sideways_clip_grads(pipe: PipelinedEncoder, clip: torch.Tensor, loss_fn: LossFn,
                        extra: Sequence[nn.Parameter] = ()) -> tuple[Grads, list[torch.Tensor]]:
    """Sideways gradients summed over a clip (B, C, T, H, W) streamed from an empty pipe, and the losses."""
    state, total, losses = init_sideways(pipe), {}, []
    for i in range(clip.shape[2]):
        r = sideways_tick(pipe, clip[:, :, i], state, loss_fn, extra)
        for n, g in r.grads.items():
            _add(total, n, g)
        if r.loss is not None:
            losses.append(r.loss.detach())
    return total, losses


def _named_trainable(pipe: PipelinedEncoder, extra: Sequence[nn.Parameter]) -> list[tuple[str, torch.Tensor]]:
    named = [(n, p) for n, p in pipe.named_parameters() if p.requires_grad]
    return named + [(f"extra.{i}", p) for i, p in enumerate(extra)]


def bp_clip_grads(pipe: PipelinedEncoder, clip: torch.Tensor, loss_fn: LossFn, extra: Sequence[nn.Parameter] = (),
                  create_graph: bool = False) -> tuple[Grads, list[torch.Tensor]]:
    """Exact gradients of the summed per-tick loss, backprop through the pipeline unrolled over the clip."""
    state, losses = pipe.init_state(), []
    for i in range(clip.shape[2]):
        out, _ = pipe.step(clip[:, :, i], state)
        if out is not None:
            loss = loss_fn(out, i)
            if loss is not None:
                losses.append(loss)
    if not losses:
        raise VideosslError(f"no scored tick in a clip of {clip.shape[2]} frames")
    named = _named_trainable(pipe, extra)
    gs = torch.autograd.grad(torch.stack(losses).sum(), [p for _, p in named], allow_unused=True, create_graph=create_graph)
    return {n: g for (n, _), g in zip(named, gs, strict=True) if g is not None}, [x.detach() for x in losses]


def per_frame_bp_grads(pipe: PipelinedEncoder, frame: torch.Tensor, loss_fn: LossFn,
                       extra: Sequence[nn.Parameter] = (), lagged_grad: bool = True) -> Grads:
    """Backprop through the per-frame model (:meth:`PipelinedEncoder.sequential`) on one frame; without
    ``lagged_grad`` no gradient flows through lagged skips (what Sideways computes)."""
    loss = loss_fn(pipe.sequential(frame, lagged_grad=lagged_grad), 0)
    named = _named_trainable(pipe, extra)
    gs = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    return {n: g for (n, _), g in zip(named, gs, strict=True) if g is not None}


def grad_cosines(approx: Grads, exact: Grads, by_stage: bool = True) -> dict[str, float]:
    """Cosine between two gradients, per stage (``stages.<l>`` with its skip adapters; ``extra``) or per tensor."""
    def key(n: str) -> str:
        if not by_stage:
            return n
        if n.startswith("adapters."):
            return f"stages.{int(n.split('.')[1].split('_')[1])}"
        return ".".join(n.split(".")[:2]) if n.startswith("stages.") else n.split(".")[0]
    a: dict[str, list[torch.Tensor]] = {}
    b: dict[str, list[torch.Tensor]] = {}
    for n in sorted(set(approx) | set(exact)):
        ref = exact.get(n, approx.get(n))
        a.setdefault(key(n), []).append(approx.get(n, torch.zeros_like(ref)).flatten())
        b.setdefault(key(n), []).append(exact.get(n, torch.zeros_like(ref)).flatten())
    out = {}
    for k in a:
        x, y = torch.cat(a[k]).double(), torch.cat(b[k]).double()
        out[k] = float(torch.nn.functional.cosine_similarity(x, y, dim=0)) if x.norm() * y.norm() > 0 else float("nan")
    return out
