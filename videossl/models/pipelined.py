"""A per-frame backbone cut into stages that run as a pipeline over time (the streaming encoder).

Massively Parallel Video Networks (Carreira et al., ECCV 2018, arXiv 1806.03863, §3 "depth-parallel
networks"): stage ``l`` at tick ``t`` reads what stage ``l-1`` wrote at tick ``t-1``, so every stage works
on a different frame in the same tick and the depth is computed in parallel. Stage ``s`` may run on a
slower clock: it updates only on ticks ``t % r_s == 0`` and holds its output otherwise, so the work per
frame is ``sum_s cost_s / r_s`` (arXiv 1806.03863 §3.2, "multi-rate clocks"). Temporal skip edges
``(src, dst)`` feed ``dst`` the output ``src`` wrote at the previous tick as well, which brings a newer
frame to ``dst`` (Skip-Sideways, Malinowski et al., CVPR 2021, arXiv 2106.08318, §3 and Fig. 1): the
output lags fewer ticks. A *lagged* skip ``(src, dst, lag)`` (our addition; ``src`` may be ``dst - 1``) feeds
``dst`` the output ``src`` wrote ``lag`` ticks before that, from a delay line kept in the state: ``dst`` then
sees two frames ``lag`` apart (or more), so it can compare them. Plain Sideways gradients lose the part that
tells the order of nearby frames apart below the top stage (BENCHMARKS.md, "Streaming", session 13); a lagged
skip into the top stage, whose gradient is exact, compares frames far enough apart to learn it (Sideways drops
the delay line's delta: :mod:`videossl.models.sideways`).

Conventions (all tested in ``tests/test_pipelined.py``):

* Stage 0 reads the frame of the current tick. With ``L`` stages and no skips the top output at tick ``t``
  is a function of frame ``t - (L - 1)``: ``delay = L - 1`` ticks, i.e. a frame is seen at the output on the
  ``L``-th tick counting the one that fed it. ``step`` returns the delay measured on the state (the age of
  the newest frame the top buffer depends on), which also counts the holding of slow clocks.
* An empty buffer (pipe not yet full) is ``None``; a stage whose main input is empty stays empty, so the top
  output is ``None`` for the first ``L - 1`` ticks and nothing partial ever reaches it.
* Skips combine by ``add`` (shapes must match, or ``from_sequential`` builds a pool + 1x1 adapter from an
  example frame) or ``concat`` along channels (the consumer must accept the wider input).

Models never import data, methods or eval; the training rules (BP, Sideways, Skip-Sideways) over this
module are in :mod:`videossl.models.sideways`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from videossl.errors import VideosslError

__all__ = ["FRAME_INPUTS", "FrameCNN", "PipelinedEncoder", "StreamState", "frame_inputs", "sequential_layers"]


@dataclass
class StreamState:
    """What a streaming encoder carries between ticks: the tick count, each stage's output buffer and the
    index of the newest frame each buffer depends on (``-inf`` style ``None`` when empty)."""

    t: int = 0
    buffers: list[torch.Tensor | None] = field(default_factory=list)
    newest: list[int | None] = field(default_factory=list)


class SkipAdapter(nn.Module):
    """Bring a skip source to the consumer's shape for ``add``: adaptive average pool + 1x1 conv (or linear)."""

    def __init__(self, src_shape: Sequence[int], dst_shape: Sequence[int]) -> None:
        super().__init__()
        self.dst_shape = tuple(int(d) for d in dst_shape)
        if len(src_shape) == 3 and len(dst_shape) == 3:
            self.proj: nn.Module = nn.Conv2d(int(src_shape[0]), int(dst_shape[0]), 1)
            self.spatial = True
        else:
            self.proj = nn.Linear(int(math.prod(src_shape)), int(math.prod(dst_shape)))
            self.spatial = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spatial:
            return self.proj(F.adaptive_avg_pool2d(x, self.dst_shape[1:]))
        return self.proj(x.flatten(1)).view(x.shape[0], *self.dst_shape)


class _Stage(nn.Sequential):
    """One pipeline stage: consecutive layers of the backbone."""


def sequential_layers(backbone: nn.Module) -> list[nn.Module]:
    """The per-frame layers of ``backbone`` in execution order.

    * ``nn.Sequential``: its children.
    * a torchvision ResNet (``conv1 ... layer4, avgpool, fc``): its children with the flatten torchvision's
      ``forward`` does between ``avgpool`` and ``fc``.
    * a timm ``VisionTransformer``: patch embedding with position embedding, each block, then the final
      norm with timm's own pooling / head.
    * anything with ``.layers`` (a ``nn.ModuleList``), e.g. :class:`FrameCNN`.
    """
    if isinstance(backbone, nn.Sequential):
        return list(backbone)
    names = [n for n, _ in backbone.named_children()]
    if {"conv1", "layer1", "layer4", "avgpool", "fc"} <= set(names):  # torchvision ResNet
        out: list[nn.Module] = []
        for n in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            out.append(getattr(backbone, n))
        out.append(nn.Sequential(backbone.avgpool, nn.Flatten(1)))
        out.append(backbone.fc)
        return out
    if hasattr(backbone, "patch_embed") and hasattr(backbone, "blocks") and hasattr(backbone, "forward_head"):
        return [_TimmEmbed(backbone), *list(backbone.blocks), _TimmHead(backbone)]
    layers = getattr(backbone, "layers", None)
    if isinstance(layers, nn.ModuleList):
        return list(layers)
    raise VideosslError(f"{type(backbone).__name__}: cannot list its layers in order "
                        "(give an nn.Sequential, a torchvision ResNet, a timm ViT or a module with .layers)")


class _TimmEmbed(nn.Module):
    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.vit = [vit]  # not a submodule: the parts below are
        self.patch_embed = vit.patch_embed
        self.norm_pre = vit.norm_pre
        self.patch_drop = vit.patch_drop
        self.pos_drop = vit.pos_drop
        for n in ("cls_token", "reg_token", "pos_embed"):
            p = getattr(vit, n, None)
            if p is not None:
                self.register_parameter(n, p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        vit = self.vit[0]
        x = self.patch_embed(x)
        x = vit._pos_embed(x)
        x = self.patch_drop(x)
        return self.norm_pre(x)


class _TimmHead(nn.Module):
    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.vit = [vit]
        self.norm = vit.norm
        for n in ("fc_norm", "head_drop", "head", "attn_pool"):
            m = getattr(vit, n, None)
            if isinstance(m, nn.Module):
                self.add_module(n, m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        vit = self.vit[0]
        return vit.forward_head(self.norm(x))


class FrameCNN(nn.Module):
    """A small per-frame 2-D CNN (conv-ReLU layers of constant width after a strided stem), the default
    backbone of the streaming recipes. ``layers[i]`` are the units a pipeline cuts into stages; every layer
    after the stem keeps the shape, so skips between any two of them add without adapters.

    ``concat_skips``: per layer, how many skip outputs a pipeline concatenates onto its input (``skip_op:
    concat``); layer ``i`` then reads ``(1 + concat_skips[i]) * width`` channels. Default none."""

    def __init__(self, width: int = 32, depth: int = 4, in_channels: int = 3, stem_stride: int = 2,
                 norm: bool = False, concat_skips: Sequence[int] | None = None) -> None:
        super().__init__()
        self.feature_dim = int(width)
        extra = [0] * depth if concat_skips is None else [int(c) for c in concat_skips]
        if len(extra) != depth or min(extra) < 0 or extra[0] != 0:
            raise VideosslError(f"concat_skips {list(extra)}: need {depth} counts >= 0, the first 0 (the stem reads the "
                                "frame)")
        self.concat_skips = extra
        def block(cin: int, stride: int) -> nn.Module:
            parts: list[nn.Module] = [nn.Conv2d(cin, width, 3, stride=stride, padding=1)]
            if norm:
                parts.append(nn.GroupNorm(1, width))
            parts.append(nn.ReLU())
            return nn.Sequential(*parts)
        self.layers = nn.ModuleList([block(in_channels, stem_stride)]
                                    + [block(width * (1 + extra[i]), 1) for i in range(1, depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def _check_skips(skips: Iterable[Sequence[int]], n: int) -> tuple[list[tuple[int, int]], list[tuple[int, int, int]]]:
    """Split ``skips`` into plain ``(src, dst)`` edges and lagged ``(src, dst, lag)`` ones (``lag`` >= 1)."""
    plain, lagged = [], []
    for s in skips:
        if len(s) not in (2, 3):
            raise VideosslError(f"skip {list(s)}: expected [src, dst] or [src, dst, lag]")
        src, dst, lag = int(s[0]), int(s[1]), int(s[2]) if len(s) == 3 else 0
        if lag < 0:
            raise VideosslError(f"skip {list(s)}: lag must be >= 0 (ticks older than the previous tick's output)")
        if lag == 0:
            if not 0 <= src < dst - 1 < n - 1:
                raise VideosslError(f"skip ({src}, {dst}): need 0 <= src < dst - 1 < {n - 1} (stage dst already "
                                    f"reads stage dst-1; a skip jumps over at least one stage)")
            plain.append((src, dst))
        else:
            if not 0 <= src <= dst - 1 < n - 1:
                raise VideosslError(f"skip ({src}, {dst}, lag {lag}): need 0 <= src <= dst - 1 < {n - 1}")
            lagged.append((src, dst, lag))
    return sorted(set(plain)), sorted(set(lagged))


class PipelinedEncoder(nn.Module):
    """Stages run as a depth-parallel pipeline over frames, with per-stage buffers, clocks and skip edges.

    Streaming API: ``state = enc.init_state()``, then ``output, delay = enc.step(frame, state)`` per frame
    (``state`` is updated in place; ``output`` is ``None`` until the pipe is full). ``reset()`` /
    ``step(frame)`` use a state kept on the module. ``sequential(frame)`` runs the same stages on one frame
    the ordinary way (skips from the same frame), the model the pipeline approximates. ``forward(clip)``
    streams a clip ``(B, C, T, H, W)`` and returns the pooled top output of its last tick.
    """

    def __init__(self, stages: Sequence[nn.Module], clocks: Sequence[int] | None = None,
                 skips: Iterable[Sequence[int]] = (), skip_op: str = "add",
                 adapters: dict[str, nn.Module] | None = None, feature_dim: int | None = None) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        n = len(self.stages)
        if n < 1:
            raise VideosslError("a pipeline needs at least one stage")
        self.clocks = [1] * n if clocks is None else [int(c) for c in clocks]
        if len(self.clocks) != n or min(self.clocks) < 1:
            raise VideosslError(f"clocks {list(self.clocks)}: need one integer >= 1 per stage ({n} stages)")
        self.skips, self.lagged = _check_skips(skips, n)
        if self.lagged and any(c != 1 for c in self.clocks):
            raise VideosslError(f"lagged skips {self.lagged} need every clock at 1 (got {self.clocks})")
        # delay lines of lagged skips: buffer slot n + i holds stage src's output from j ticks before the last
        self._slots = {key: n + i for i, key in enumerate(sorted({(s, j) for s, _, lag in self.lagged
                                                                   for j in range(1, lag + 1)}))}
        self._slot_src = {i: s for (s, _), i in self._slots.items()}
        self._slot_lag = {i: j for (_, j), i in self._slots.items()}
        # what each stage reads, derived once (combine / step run them every tick)
        self._inputs = [[] if d == 0 else [d - 1] + [s for s, e in self.skips if e == d]
                        + [self._slots[(s, lag)] for s, e, lag in self.lagged if e == d] for d in range(n)]
        self._keys = [[self.skip_key(s, d) for s, e in self.skips if e == d]
                      + [self.skip_key(s, d, lag) for s, e, lag in self.lagged if e == d] for d in range(n)]
        self._n_lagged = [sum(1 for _, e, _ in self.lagged if e == d) for d in range(n)]
        if skip_op not in ("add", "concat"):
            raise VideosslError(f"skip_op {skip_op!r}: expected 'add' or 'concat'")
        self.skip_op = skip_op
        self.adapters = nn.ModuleDict(adapters or {})
        self.feature_dim = feature_dim
        self._state: StreamState | None = None

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_sequential(cls, backbone: nn.Module, stages: Sequence[int] | None = None,
                        clocks: Sequence[int] | None = None, skips: Iterable[Sequence[int]] = (),
                        skip_op: str = "add", example_frame: torch.Tensor | None = None) -> PipelinedEncoder:
        """Cut a per-frame backbone into stages.

        ``stages``: the number of consecutive layers (:func:`sequential_layers`) in each stage; they must add
        up to the number of layers (default: one layer per stage). ``example_frame`` (1, C, H, W) lets
        ``add`` skips between stages of different shapes get a pool + 1x1 adapter, and sets ``feature_dim``.
        """
        layers = sequential_layers(backbone)
        sizes = [1] * len(layers) if stages is None else [int(s) for s in stages]
        if sum(sizes) != len(layers) or min(sizes) < 1:
            raise VideosslError(f"stages {list(sizes)} must be positive and add up to the backbone's "
                                f"{len(layers)} layers ({[type(m).__name__ for m in layers]})")
        parts, i = [], 0
        for s in sizes:
            parts.append(_Stage(*layers[i:i + s]))
            i += s
        enc = cls(parts, clocks=clocks, skips=skips, skip_op=skip_op,
                  feature_dim=getattr(backbone, "feature_dim", None))
        if example_frame is not None:
            with torch.no_grad():
                shapes, x = [], example_frame
                for stage in parts:
                    x = stage(x)
                    shapes.append(tuple(x.shape[1:]))
            if enc.feature_dim is None:
                enc.feature_dim = int(shapes[-1][0])
            if skip_op == "add":
                for src, dst, lag in [(a, b, 0) for a, b in enc.skips] + enc.lagged:
                    if shapes[src] != shapes[dst - 1]:
                        enc.adapters[enc.skip_key(src, dst, lag)] = SkipAdapter(shapes[src], shapes[dst - 1])
        return enc

    # -- structure ----------------------------------------------------------------------------
    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @property
    def num_buffers(self) -> int:
        """Stage outputs plus the delay-line slots of lagged skips."""
        return self.num_stages + len(self._slots)

    @staticmethod
    def skip_key(src: int, dst: int, lag: int = 0) -> str:
        """The adapter name of a skip (its consumer ``dst`` second, as :func:`stage_params` reads it)."""
        return f"{src}_{dst}" if lag == 0 else f"{src}_{dst}_lag{lag}"

    def source(self, i: int) -> int:
        """The stage whose output buffer ``i`` holds (a delay-line slot holds an older output of its stage)."""
        return self._slot_src.get(i, i)

    def inputs_of(self, dst: int) -> list[int]:
        """The buffers stage ``dst`` reads: the previous stage first, then skip sources, then the delay-line
        slots of lagged skips (see :meth:`source`); stage 0 reads the frame."""
        return list(self._inputs[dst])

    def consumers_of(self, src: int) -> list[int]:
        return (([src + 1] if src + 1 < self.num_stages else []) + [d for s, d in self.skips if s == src]
                + [d for s, d, _ in self.lagged if s == src])

    def shift_delay_lines(self, old: Sequence, new: list) -> None:
        """Move every delay line one tick on (``old`` -> ``new``, for buffers or their newest-frame indices)."""
        for (s, j), i in self._slots.items():
            new[i] = old[s] if j == 1 else old[self._slots[(s, j - 1)]]

    def fill_ticks(self) -> int:
        """The first tick with a top output (all clocks 1): ``L - 1``, later when a lagged skip's delay line
        fills after the main path."""
        f = [0] * self.num_stages
        for l in range(1, self.num_stages):  # noqa: E741
            f[l] = max([f[l - 1] + 1] + [f[s] + lag + 1 for s, d, lag in self.lagged if d == l])
        return f[-1]

    def structural_delay(self) -> int:
        """Ticks between a frame and the first top output that depends on it (all clocks 1)."""
        d = [0] * self.num_stages
        for l in range(1, self.num_stages):  # noqa: E741
            d[l] = 1 + min(d[self.source(s)] + self._slot_lag.get(s, 0) for s in self.inputs_of(l))
        return d[-1]

    def combine(self, dst: int, inputs: Sequence[torch.Tensor | None]) -> torch.Tensor | None:
        """Stage ``dst``'s input from its producers' outputs (ordered as :meth:`inputs_of`); ``None`` while
        the main (previous-stage) input is empty; empty skip sources are left out."""
        if dst == 0:
            return inputs[0]
        main = inputs[0]
        if main is None:
            return None
        n_lagged = self._n_lagged[dst]
        if n_lagged and any(x is None for x in inputs[len(inputs) - n_lagged:]):
            return None  # a delay line still filling: the stage waits for it (nothing partial goes up)
        extra = []
        for key, x in zip(self._keys[dst], inputs[1:], strict=True):
            if x is None:
                continue
            extra.append(self.adapters[key](x) if key in self.adapters else x)
        if not extra:
            return main
        if self.skip_op == "concat":
            return torch.cat([main, *extra], dim=1)
        for x in extra:
            if x.shape != main.shape:
                raise VideosslError(f"skip into stage {dst}: shape {tuple(x.shape)} != {tuple(main.shape)} "
                                    "(give from_sequential an example_frame to build adapters, or use skip_op concat)")
            main = main + x
        return main

    def updates_at(self, stage: int, t: int) -> bool:
        return t % self.clocks[stage] == 0

    # -- streaming ----------------------------------------------------------------------------
    def init_state(self) -> StreamState:
        n = self.num_buffers
        return StreamState(t=0, buffers=[None] * n, newest=[None] * n)

    def reset(self) -> None:
        self._state = self.init_state()

    def step(self, frame: torch.Tensor | None, state: StreamState | None = None,
             owned: Sequence[int] | None = None) -> tuple[torch.Tensor | None, int | None]:
        """One tick: every stage that is due reads the previous tick's buffers; returns (top output, delay).

        ``delay`` is the age in ticks of the newest frame the output depends on (``None`` while empty).
        ``owned``: compute only these stages (a stage group of a distributed pipeline, whose driver writes the
        other groups' boundary buffers into ``state``); default all.
        """
        if state is None:
            if self._state is None:
                self.reset()
            state = self._state
        updates = {}
        for l in range(self.num_stages):  # noqa: E741
            if owned is None or l in owned:
                u = self.stage_update(l, frame, state)
                if u is not None:
                    updates[l] = u
        return self.advance(state, updates)

    def stage_update(self, l: int, frame: torch.Tensor | None,  # noqa: E741
                     state: StreamState) -> tuple[torch.Tensor, int] | None:
        """Stage ``l``'s new (output, newest frame) at tick ``state.t``, read from the previous tick's buffers;
        ``None`` when the stage is not due or its input is still empty. Stages of one tick are independent, so
        a caller may compute them in any order (a distributed group computes its top stage first)."""
        t = state.t
        if not self.updates_at(l, t):
            return None
        if l == 0:
            return self.stages[0](frame), t
        srcs = self.inputs_of(l)
        x = self.combine(l, [state.buffers[s] for s in srcs])
        if x is None:
            return None
        return self.stages[l](x), max(state.newest[s] for s in srcs if state.newest[s] is not None)

    def advance(self, state: StreamState,
                updates: dict[int, tuple[torch.Tensor, int]]) -> tuple[torch.Tensor | None, int | None]:
        """End a tick: write the stages' new outputs, move the delay lines on; returns (top output, delay)."""
        t, old, old_new = state.t, state.buffers, state.newest
        new, new_newest = list(old), list(old_new)
        for l, (y, newest) in updates.items():  # noqa: E741
            new[l], new_newest[l] = y, newest
        self.shift_delay_lines(old, new)
        self.shift_delay_lines(old_new, new_newest)
        state.buffers, state.newest, state.t = new, new_newest, t + 1
        top = new_newest[self.num_stages - 1]
        return new[self.num_stages - 1], (None if top is None else t - top)

    def stream(self, clip: torch.Tensor, state: StreamState | None = None) -> tuple[list[torch.Tensor | None], list]:
        """Step through a clip (B, C, T, H, W): per-tick outputs and delays."""
        state = self.init_state() if state is None else state
        outs, delays = [], []
        for i in range(clip.shape[2]):
            o, d = self.step(clip[:, :, i], state)
            outs.append(o)
            delays.append(d)
        return outs, delays

    def sequential(self, frame: torch.Tensor, lagged_grad: bool = True) -> torch.Tensor:
        """The per-frame model: all stages on one frame, skips taken from the same frame (lagged ones detached
        without ``lagged_grad``: the function Sideways' gradient is exact for on a constant video)."""
        return self.sequential_outputs(frame, lagged_grad)[-1]

    def sequential_outputs(self, frame: torch.Tensor, lagged_grad: bool = True) -> list[torch.Tensor]:
        """Every stage's output of the per-frame model on one frame (see :meth:`sequential`)."""
        outs: list[torch.Tensor] = []

        def read(s: int) -> torch.Tensor:
            x = outs[self.source(s)]
            return x if lagged_grad or s < self.num_stages else x.detach()
        for l, stage in enumerate(self.stages):  # noqa: E741
            x = frame if l == 0 else self.combine(l, [read(s) for s in self.inputs_of(l)])
            outs.append(stage(x))
        return outs

    @staticmethod
    def pool(x: torch.Tensor) -> torch.Tensor:
        """(B, D) features from a top output: spatial mean of a map, token mean of a sequence."""
        if x.dim() == 4:
            return x.mean(dim=(2, 3))
        if x.dim() == 3:
            return x.mean(dim=1)
        return x.flatten(1)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        outs, _ = self.stream(clip)
        if outs[-1] is None:
            raise VideosslError(f"clip of {clip.shape[2]} frames is shorter than the pipeline fill "
                                f"({self.num_stages} ticks): no output yet")
        return self.pool(outs[-1])

    def stage_costs(self, frame: torch.Tensor) -> list[float]:
        """FLOPs of each stage (with its skip adapters) on one frame, counted by ``torch.utils.flop_counter``."""
        from torch.utils.flop_counter import FlopCounterMode

        costs, outs = [], []
        with torch.no_grad():
            for l, stage in enumerate(self.stages):  # noqa: E741
                with FlopCounterMode(display=False) as fc:
                    x = frame if l == 0 else self.combine(l, [outs[self.source(s)] for s in self.inputs_of(l)])
                    outs.append(stage(x))
                costs.append(float(fc.get_total_flops()))
        return costs


FRAME_INPUTS = ("rgb", "rgb_diff")


def frame_inputs(clip: torch.Tensor, kind: str = "rgb", diff_scale: float = 1.0) -> torch.Tensor:
    """What the per-frame model reads at each tick, from a clip (B, C, T, H, W), causally.

    ``rgb``: the frame. ``rgb_diff``: the frame and its difference to the previous frame (zero at t = 0),
    2C channels: the one causal temporal cue a per-frame model can use without skips. ``diff_scale``
    multiplies the difference (at ~0.5 px/frame the difference's std is ~1/8 of the frame's: the streaming
    recipes scale it by 8 so both halves start on a par).
    """
    if kind == "rgb":
        return clip
    if kind == "rgb_diff":
        prev = torch.cat([clip[:, :, :1], clip[:, :, :-1]], dim=2)
        return torch.cat([clip, (clip - prev) * diff_scale], dim=1)
    raise VideosslError(f"frame input {kind!r}: expected one of {FRAME_INPUTS}")
