"""Small heads on top of encoders: BraVe's projector / predictor MLPs (arXiv:2103.16559 §3.2) and
the flow autoencoder's flow heads and frame decoder (arXiv:1511.06309 §2).

Heads are plain ``nn.Module`` classes; methods compose them, they never import a method.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from videossl.errors import VideosslError

__all__ = ["MLP", "Decoder", "MultiScaleFlowHead", "PaperFlowHead", "predictor", "projector"]


class MLP(nn.Sequential):
    """Linear → BN → ReLU → Linear [→ BN]: BraVe's projector (``final_bn=True``) / predictor.

    Input and output are ``(B, dim)``. The final BN has learned scale and offset.
    """

    def __init__(
        self, in_dim: int, hidden_dim: int = 4096, out_dim: int = 128, final_bn: bool = False
    ) -> None:
        if min(in_dim, hidden_dim, out_dim) < 1:
            raise VideosslError(f"MLP dims must be >= 1, got in={in_dim}, hidden={hidden_dim}, out={out_dim}")
        mods: list[tuple[str, nn.Module]] = [
            ("fc1", nn.Linear(in_dim, hidden_dim)),
            ("bn1", nn.BatchNorm1d(hidden_dim)),
            ("act", nn.ReLU(inplace=True)),
            ("fc2", nn.Linear(hidden_dim, out_dim)),
        ]
        if final_bn:
            mods.append(("bn2", nn.BatchNorm1d(out_dim)))
        super().__init__(OrderedDict(mods))
        self.in_dim, self.hidden_dim, self.out_dim = in_dim, hidden_dim, out_dim


def projector(in_dim: int, hidden_dim: int = 4096, out_dim: int = 128) -> MLP:
    """BraVe projector g: Linear → BN → ReLU → Linear → BN (final BN, unlike BYOL)."""
    return MLP(in_dim, hidden_dim, out_dim, final_bn=True)


def predictor(in_dim: int = 128, hidden_dim: int = 4096, out_dim: int = 128) -> MLP:
    """BraVe predictor h: Linear → BN → ReLU → Linear (no final BN)."""
    return MLP(in_dim, hidden_dim, out_dim, final_bn=False)




class PaperFlowHead(nn.Module):
    """conv k×k (C_h → 2) → conv k×k (2 → 2) → conv 1×1 (2 → 2, zero init: identity warp at start); no nonlinearity.

    Output: displacement in pixels of the memory grid, channel 0 = dx, 1 = dy.
    """

    def __init__(self, hidden: int, kernel_size: int = 15) -> None:
        super().__init__()
        k = kernel_size
        self.net = nn.Sequential(nn.Conv2d(hidden, 2, k, padding=k // 2), nn.Conv2d(2, 2, k, padding=k // 2), nn.Conv2d(2, 2, 1))
        for m in self.net[:2]:
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
        nn.init.zeros_(self.net[2].weight)
        nn.init.zeros_(self.net[2].bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


def _block(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, 32, k, padding=k // 2), nn.LeakyReLU(0.1, inplace=True),
                         nn.Conv2d(32, cout, k, padding=k // 2))


class MultiScaleFlowHead(nn.Module):
    """Coarse flow from h_t at the memory resolution, then ×2 upsampling (flow ×2) + a residual per scale
    (input: upsampled flow and frame t's features at that scale, the frame itself at full resolution).

    Returns the flows coarse → fine, each in pixels of its own scale; ``2·directions`` channels
    (direction 0 = backward B_{t+1→t}; direction 1 = forward F_{t→t+1} when two are asked for).
    """

    def __init__(self, hidden: int, pyramid_channels: list[int], in_channels: int, directions: int = 1, k: int = 3) -> None:
        super().__init__()
        n = 2 * directions
        self.coarse = _block(hidden, n, k)
        fine_feats = list(reversed([in_channels] + pyramid_channels[:-1]))  # features at stride/2, ..., 1
        self.refine = nn.ModuleList(_block(n + c, n, k) for c in fine_feats)
        for blk in [self.coarse, *self.refine]:
            nn.init.zeros_(blk[-1].weight)
            nn.init.zeros_(blk[-1].bias)

    def forward(self, h: torch.Tensor, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """h (N, C_h, h, w); feats = frame t's features at stride/2, …, 1 (N, C, ·, ·)."""
        flows = [self.coarse(h)]
        for blk, f in zip(self.refine, feats, strict=True):
            up = 2.0 * F.interpolate(flows[-1], size=f.shape[-2:], mode="bilinear", align_corners=False)
            flows.append(up + blk(torch.cat([up, f], 1)))
        return flows


class Decoder(nn.Module):
    """Nearest-neighbour ×stride upsampling → conv k×k (C_enc → C_in); no nonlinearity (spec §2)."""

    def __init__(self, enc_channels: int, out_channels: int, stride: int = 2, kernel_size: int = 7) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(enc_channels, out_channels, kernel_size, padding=kernel_size // 2)
        nn.init.xavier_uniform_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=self.stride, mode="nearest"))
