"""ConvLSTM memory (no peepholes) and the spatio-temporal encoder of the flow autoencoder.

Equations (Pătrăucean et al. 2016; Pătrăucean et al., arXiv:1511.06309), ∗ = 2-D convolution::

    i_t = σ(W_xi∗x_t + b_i + W_hi∗h_{t−1})      f_t = σ(W_xf∗x_t + b_f + W_hf∗h_{t−1})
    g_t = tanh(W_xg∗x_t + b_g + W_hg∗h_{t−1})   o_t = σ(W_xo∗x_t + b_o + W_ho∗h_{t−1})
    c_t = f_t ⊙ c_{t−1} + i_t ⊙ g_t             h_t = o_t ⊙ tanh(c_t)

The gates see x_t and h_{t−1} only (**no** peephole terms on c, unlike Shi et al. 2015). Biases
live on the input-to-gate convolution (``x2h``); the hidden-to-gate convolution (``h2h``) has none.
Gate order in the 4·C_h output channels: i, f, g, o. h_0 = c_0 = 0. The optional *untied first
step* (released Lua code) uses separate convolutions on x_1 only and no forget gate:
c_1 = i_1⊙g_1, h_1 = o_1⊙tanh(c_1).

:class:`FlowEncoder` = spatial encoder E (per frame) + ConvLSTM; it is the ``module.encoder`` of
:class:`videossl.methods.flow_autoencoder.FlowAutoencoder` and, called on a clip (B, C, T, H, W),
returns the globally pooled hidden state (B, feature_dim) that linear probes use.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from videossl.errors import VideosslError
from videossl.models.motion import GRAY_WEIGHTS, causal_differences

# Architecture presets (spec §2-3 and §8.4). `paper`: the paper's figures; `code`: the released
# Torch7 code (viorik/ConvLSTM opts-mnist.lua); `modern`: the stronger variant of §8.4.
ENCODER_PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(channels=(16,), kernel_size=7, activation="tanh", norm=False, hidden_channels=64,
                  memory_kernel_size=7, num_layers=1, forget_bias=1.0, untied_first=False, gate_norm=False,
                  xavier=True),
    "code": dict(channels=(32,), kernel_size=7, activation="tanh", norm=False, hidden_channels=45,
                 memory_kernel_size=7, num_layers=1, forget_bias=0.0, untied_first=True, gate_norm=False,
                 xavier=True),
    "modern": dict(channels=(16, 32), kernel_size=3, activation="relu", norm=True, hidden_channels=64,
                   memory_kernel_size=3, num_layers=1, forget_bias=1.0, untied_first=False, gate_norm=True,
                   xavier=False),
}


def _init_lstm(module: nn.Module, forget_bias: float, hidden: int, init_range: float, gates: str = "ifgo") -> None:
    for p in module.parameters():
        nn.init.uniform_(p, -init_range, init_range)
    for m in module.modules():
        if isinstance(m, nn.Conv2d) and m.bias is not None:
            nn.init.zeros_(m.bias)
            if "f" in gates:
                k = gates.index("f")
                with torch.no_grad():
                    m.bias[k * hidden:(k + 1) * hidden].fill_(forget_bias)


class ConvLSTMCell(nn.Module):
    """One ConvLSTM step without peepholes.

    Args:
        in_channels, hidden_channels: C_x, C_h.
        kernel_size: input-to-gate kernel (paper 7); memory_kernel_size: hidden-to-gate kernel
            (default = kernel_size). Stride 1, "same" padding.
        forget_bias: initial forget-gate bias (paper 1, code 0); other biases start at 0; all
            weights U(−init_range, init_range) (0.08 as the released code).
        gate_norm: GroupNorm (4 groups, one per gate) on the gate pre-activations (modern preset).
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 7, memory_kernel_size: int | None = None,
                 forget_bias: float = 0.0, init_range: float = 0.08, gate_norm: bool = False) -> None:
        super().__init__()
        km = memory_kernel_size or kernel_size
        if kernel_size % 2 == 0 or km % 2 == 0:
            raise VideosslError(f"ConvLSTM kernels must be odd ('same' padding), got {kernel_size} and {km}")
        self.in_channels, self.hidden_channels = int(in_channels), int(hidden_channels)
        self.x2h = nn.Conv2d(in_channels, 4 * hidden_channels, kernel_size, padding=kernel_size // 2, bias=True)
        self.h2h = nn.Conv2d(hidden_channels, 4 * hidden_channels, km, padding=km // 2, bias=False)
        self.norm = nn.GroupNorm(4, 4 * hidden_channels) if gate_norm else None
        _init_lstm(self.x2h, forget_bias, hidden_channels, init_range)
        _init_lstm(self.h2h, forget_bias, hidden_channels, init_range)

    def zero_state(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, h, w = x.shape
        z = x.new_zeros(b, self.hidden_channels, h, w)
        return z, z.clone()

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None):
        """x (B, C_x, H, W), state (h, c) or None (zeros) → (h_t, c_t)."""
        h, c = state if state is not None else self.zero_state(x)
        z = self.x2h(x) + self.h2h(h)
        if self.norm is not None:
            z = self.norm(z)
        i, f, g, o = z.chunk(4, dim=1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c + i * g
        return o * torch.tanh(c), c


class UntiedFirstStep(nn.Module):
    """The released code's first step: own convolutions on x_1, no memory, no forget gate."""

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 7, init_range: float = 0.08,
                 gate_norm: bool = False) -> None:
        super().__init__()
        self.hidden_channels = int(hidden_channels)
        self.x2h = nn.Conv2d(in_channels, 3 * hidden_channels, kernel_size, padding=kernel_size // 2, bias=True)
        self.norm = nn.GroupNorm(3, 3 * hidden_channels) if gate_norm else None
        _init_lstm(self.x2h, 0.0, hidden_channels, init_range, gates="igo")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.x2h(x)
        if self.norm is not None:
            z = self.norm(z)
        i, g, o = z.chunk(3, dim=1)
        c = torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


State = list  # per layer: (h, c); None = fresh memory (h_0 = c_0 = 0)


class ConvLSTM(nn.Module):
    """A stack of :class:`ConvLSTMCell` run over time; ``step`` for online use, ``forward`` for a sequence."""

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 7, memory_kernel_size: int | None = None,
                 num_layers: int = 1, forget_bias: float = 0.0, untied_first: bool = False, init_range: float = 0.08,
                 gate_norm: bool = False) -> None:
        super().__init__()
        if num_layers < 1:
            raise VideosslError(f"ConvLSTM num_layers must be >= 1, got {num_layers}")
        self.hidden_channels, self.num_layers = int(hidden_channels), int(num_layers)
        dims = [in_channels] + [hidden_channels] * num_layers
        self.cells = nn.ModuleList(
            ConvLSTMCell(dims[i], hidden_channels, kernel_size, memory_kernel_size, forget_bias, init_range, gate_norm)
            for i in range(num_layers))
        self.first = (nn.ModuleList(UntiedFirstStep(dims[i], hidden_channels, kernel_size, init_range, gate_norm)
                                    for i in range(num_layers)) if untied_first else None)

    def step(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, torch.Tensor, State]:
        """One time step: x (B, C_x, H, W) → (h of the top layer, c of the top layer, new state)."""
        new: State = []
        inp = x
        for li, cell in enumerate(self.cells):
            prev = state[li] if state is not None else None
            if prev is None and self.first is not None:
                h, c = self.first[li](inp)
            else:
                h, c = cell(inp, prev)
            new.append((h, c))
            inp = h
        return new[-1][0], new[-1][1], new

    def forward(self, seq: torch.Tensor, state: State | None = None):
        """seq (B, T, C_x, H, W) → (h (B, T, C_h, H, W), c (B, T, C_h, H, W), final state)."""
        hs, cs = [], []
        for t in range(seq.shape[1]):
            h, c, state = self.step(seq[:, t], state)
            hs.append(h)
            cs.append(c)
        return torch.stack(hs, 1), torch.stack(cs, 1), state


class FlowEncoder(nn.Module):
    """Spatial encoder E (per frame) + ConvLSTM memory; ``forward(clip)`` → pooled features (B, D).

    E is ``len(channels)`` stages of conv k×k (stride 1, same padding) → [GroupNorm] → activation →
    max-pool 2×2, so the memory runs at 1/stride of the input, ``stride = 2**len(channels)``.

    Args:
        preset: ``paper`` (16 filters, 64 hidden, 7×7, forget bias 1), ``code`` (32, 45, untied first
            step, forget bias 0) or ``modern`` (2 stages 3×3 with GroupNorm+ReLU, stride 4, ConvLSTM
            3×3 with GroupNorm on the gates); any other argument left ``None`` takes the preset's value.
        in_channels: 1 (grey) or 3 (RGB). With ``in_channels=1`` and ``rgb_to_grey=True`` RGB clips
            are converted to grey (torchvision's weights); every other channel mismatch is an error.
        pool: ``last`` (average-pooled h_T) or ``mean_t`` (mean over t ≥ burn_in of pooled h_t).
        with_cell: concatenate the pooled c (feature_dim = 2·C_h).
        burn_in: first steps whose memory is still empty: never pooled, never in the loss (≥ 1: the
            first step sees one frame only).
        motion_input: feed E the frame *and* its temporal difference ``motion_gain·(Y_t − Y_{t−1})``
            (zero at the first step), so the memory sees motion directly instead of having to compare
            consecutive feature maps through its gates (our addition, not in the paper; see
            BENCHMARKS.md: without it the modern variant did not learn sub-pixel motion in 1050 CPU steps).
    """

    def __init__(self, preset: str = "paper", in_channels: int = 1, channels: list[int] | None = None,
                 kernel_size: int | None = None, activation: str | None = None, norm: bool | None = None,
                 hidden_channels: int | None = None, memory_kernel_size: int | None = None, num_layers: int | None = None,
                 forget_bias: float | None = None, untied_first: bool | None = None, gate_norm: bool | None = None,
                 pool: str = "last", with_cell: bool = False, burn_in: int = 1, rgb_to_grey: bool = True,
                 motion_input: bool = False, motion_gain: float = 8.0) -> None:
        super().__init__()
        if preset not in ENCODER_PRESETS:
            raise VideosslError(f"unknown flow encoder preset {preset!r}: choose one of {', '.join(ENCODER_PRESETS)}")
        p = dict(ENCODER_PRESETS[preset])
        for k, v in dict(channels=channels, kernel_size=kernel_size, activation=activation, norm=norm,
                         hidden_channels=hidden_channels, memory_kernel_size=memory_kernel_size, num_layers=num_layers,
                         forget_bias=forget_bias, untied_first=untied_first, gate_norm=gate_norm).items():
            if v is not None:
                p[k] = v
        if in_channels not in (1, 3):
            raise VideosslError(f"in_channels must be 1 (grey) or 3 (RGB), got {in_channels}")
        if pool not in ("last", "mean_t"):
            raise VideosslError(f"pool must be 'last' or 'mean_t', got {pool!r}")
        if p["activation"] not in ("tanh", "relu"):
            raise VideosslError(f"activation must be 'tanh' or 'relu', got {p['activation']!r}")
        if burn_in < 1:
            raise VideosslError(f"burn_in must be >= 1 (the first step has no memory), got {burn_in}")
        self.preset, self.in_channels, self.rgb_to_grey = preset, int(in_channels), bool(rgb_to_grey)
        self.pool, self.with_cell, self.burn_in = pool, bool(with_cell), int(burn_in)
        self.channels = [int(c) for c in p["channels"]]
        self.hidden_channels = int(p["hidden_channels"])
        self.config = p
        self.motion_input, self.motion_gain = bool(motion_input), float(motion_gain)
        k = int(p["kernel_size"])
        stages, cin = [], self.in_channels * (2 if self.motion_input else 1)
        for cout in self.channels:
            layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, padding=k // 2)]
            if p["norm"]:
                layers.append(nn.GroupNorm(min(8, cout), cout))
            layers += [nn.Tanh() if p["activation"] == "tanh" else nn.ReLU(inplace=True), nn.MaxPool2d(2, 2)]
            stages.append(nn.Sequential(*layers))
            cin = cout
        self.stages = nn.ModuleList(stages)
        if p["xavier"]:  # spec §2: Xavier, biases 0
            for m in self.stages.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.xavier_uniform_(m.weight)
                    nn.init.zeros_(m.bias)
        self.memory = ConvLSTM(self.channels[-1], self.hidden_channels, k, p["memory_kernel_size"], p["num_layers"],
                               p["forget_bias"], p["untied_first"], gate_norm=p["gate_norm"])
        self.feature_dim = self.hidden_channels * (2 if self.with_cell else 1)

    @property
    def stride(self) -> int:
        return 2 ** len(self.channels)

    @property
    def out_channels(self) -> int:
        return self.channels[-1]

    # -- input checks ---------------------------------------------------------------------------
    def prepare(self, clip: torch.Tensor) -> torch.Tensor:
        """Check a clip (B, C, T, H, W) against the model and convert RGB → grey when asked."""
        if clip.ndim != 5:
            raise VideosslError(f"expected a clip (B, C, T, H, W), got shape {tuple(clip.shape)}")
        c, h, w = clip.shape[1], clip.shape[-2], clip.shape[-1]
        if c != self.in_channels:
            if c == 3 and self.in_channels == 1 and self.rgb_to_grey:
                wts = clip.new_tensor(GRAY_WEIGHTS).view(1, 3, 1, 1, 1)
                clip = (clip * wts).sum(1, keepdim=True)
            else:
                kind = {1: "grey", 3: "RGB"}
                raise VideosslError(
                    f"channel mismatch: the model takes {self.in_channels}-channel ({kind.get(self.in_channels, '?')}) "
                    f"clips but got {c} channel(s) ({kind.get(c, '?')}); set in_channels={c}"
                    + (" or rgb_to_grey=true" if c == 3 else "") + " in the encoder config")
        if h % self.stride or w % self.stride:
            raise VideosslError(
                f"frame size {h}x{w} is not divisible by the encoder stride {self.stride}: use a view size "
                f"that is a multiple of {self.stride} (e.g. {h - h % self.stride or self.stride})")
        return clip.float()

    def check_length(self, t: int, need: int, what: str) -> None:
        if t < need:
            raise VideosslError(f"sequence of {t} frame(s) is too short for burn_in={self.burn_in}: {what} needs at "
                                f"least {need} frames (use more frames per view or a smaller burn_in)")

    # -- pieces ---------------------------------------------------------------------------------
    def frame_inputs(self, frames: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
        """frames (B, T, C, H, W) → E's inputs (B, T, C_E, H, W): the frames, plus with ``motion_input``
        ``motion_gain·(Y_t − Y_{t−1})``; Y_{−1} is ``previous`` (streaming) or Y_0 itself (zero difference)."""
        if not self.motion_input:
            return frames
        return torch.cat([frames, self.motion_gain * causal_differences(frames, 1, previous)], 2)

    def spatial(self, frames: torch.Tensor) -> list[torch.Tensor]:
        """E's inputs (N, C_E, H, W) (see :meth:`frame_inputs`) → feature pyramid [stage 1, …, X] (stride 2, 4, …)."""
        out, x = [], frames
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out

    def pooled(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        f = h.mean(dim=(-2, -1))
        return torch.cat([f, c.mean(dim=(-2, -1))], dim=-1) if self.with_cell else f

    @property
    def feature_stride(self) -> tuple[int, int]:
        """(time, space) stride of :meth:`forward_features`: every frame, at 1/``stride`` of its size."""
        return (1, self.stride)

    def forward_features(self, clip: torch.Tensor) -> torch.Tensor:
        """Dense per-frame features for correspondence probes: the memory's hidden state h_t after frame t
        (B, C_h, T, H/stride, W/stride); causal (h_t has seen frames <= t only)."""
        clip = self.prepare(clip)
        b, _, t = clip.shape[:3]
        frames = self.frame_inputs(clip.permute(0, 2, 1, 3, 4))
        x = self.spatial(frames.reshape(b * t, *frames.shape[2:]))[-1]
        hs, _, _ = self.memory(x.view(b, t, *x.shape[1:]))
        return hs.transpose(1, 2)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        clip = self.prepare(clip)
        b, _, t = clip.shape[:3]
        self.check_length(t, self.burn_in + 1, "a feature (pooled after the burn-in)")
        frames = self.frame_inputs(clip.permute(0, 2, 1, 3, 4))
        x = self.spatial(frames.reshape(b * t, *frames.shape[2:]))[-1]
        hs, cs, _ = self.memory(x.view(b, t, *x.shape[1:]))
        if self.pool == "last":
            return self.pooled(hs[:, -1], cs[:, -1])
        return self.pooled(hs[:, self.burn_in:], cs[:, self.burn_in:]).mean(1)


__all__ = ["ConvLSTM", "ConvLSTMCell", "ENCODER_PRESETS", "FlowEncoder", "UntiedFirstStep"]
