"""Diagnostic for the flow autoencoder: can a *plain* CNN estimator learn these motions with its loss?

A 5-layer CNN takes frames (t, t+1) at full resolution and outputs the backward flow B_{t+1->t};
frame t warped by it is compared with frame t+1 under a photometric term (``--data-term``: 0.15 L1 +
0.85 SSIM by default, MSE or Charbonnier) plus edge-aware smoothness. No encoder stride, no ConvLSTM, no
forecasting. EPE is measured against the synthetic set's ground-truth flow on pixels that move by more than 0.5 px (test split).

    python tools/flow_pair_diagnostic.py --data data/synth --steps 600 --smooth 0.02
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from videossl.data.decoding import open_video
from videossl.data.shards.format import iter_tar_samples, load_npz, split_shard_paths
from videossl.losses import photometric as P
from videossl.models.warp import backward_warp


def load(data: str, split: str, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, T, 3, H, W) float frames in [0, 1] and (N, T-1, H, W, 2) backward flow of ``limit`` videos."""
    videos, flows = [], []
    for path in split_shard_paths(data, split):
        for _, g in iter_tar_samples(path):
            with open_video(g["mp4"]) as r:
                videos.append(torch.as_tensor(np.asarray(r.get_frames(list(range(r.num_frames))))))
            flows.append(torch.from_numpy(load_npz(g["flow.npz"])["backward"]))
            if len(videos) >= limit:
                return torch.stack(videos).permute(0, 1, 4, 2, 3).float() / 255, torch.stack(flows)
    return torch.stack(videos).permute(0, 1, 4, 2, 3).float() / 255, torch.stack(flows)


class Estimator(nn.Module):
    def __init__(self, width: int = 32) -> None:
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(6, w, 5, padding=2), nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=2, dilation=2), nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=4, dilation=4), nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(w, 2, 3, padding=1),
        )
        nn.init.zeros_(self.net[-1].weight)  # start at zero flow, like the flow autoencoder's head
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([a, b], 1))


@torch.no_grad()
def epe_moving(model: Estimator, frames: torch.Tensor, flows: torch.Tensor) -> tuple[float, float]:
    err = zero = count = 0.0
    for t in range(0, frames.shape[1] - 1, 3):
        pred = model(frames[:, t], frames[:, t + 1])
        gt = flows[:, t].permute(0, 3, 1, 2)
        moving = gt.norm(dim=1) > 0.5
        err += float((pred - gt).norm(dim=1)[moving].sum())
        zero += float(gt.norm(dim=1)[moving].sum())
        count += float(moving.sum())
    return err / count, zero / count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/synth")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--smooth", type=float, default=0.02, help="edge-aware smoothness weight")
    ap.add_argument("--train-videos", type=int, default=400)
    ap.add_argument("--test-videos", type=int, default=100)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--data-term", choices=["l1_ssim", "mse", "charbonnier"], default="l1_ssim",
                    help="photometric term between warped frame t and frame t+1")
    args = ap.parse_args()
    torch.manual_seed(0)
    train, _ = load(args.data, "train", args.train_videos)
    test, test_flow = load(args.data, "test", args.test_videos)
    model = Estimator()
    opt = torch.optim.Adam(model.parameters(), args.lr)
    start = time.time()
    T = train.shape[1]
    data = {"l1_ssim": P.l1_ssim, "mse": P.mse, "charbonnier": P.charbonnier}[args.data_term]
    for step in range(args.steps):
        i = torch.randint(0, len(train), (16,))
        t = torch.randint(0, T - 1, (16,))
        a, b = train[i, t], train[i, t + 1]
        flow = model(a, b)
        warped = backward_warp(a, flow, True, padding_mode="border")
        loss = data(warped, b) + args.smooth * P.edge_aware_smoothness(flow, b, 10.0, 1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == args.steps - 1:
            epe, zero = epe_moving(model, test, test_flow)
            print(f"step {step}: loss {loss.item():.4f}, EPE on moving pixels {epe:.3f} px vs zero flow {zero:.3f} px "
                  f"({time.time() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
