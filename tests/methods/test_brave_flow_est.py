"""BraVe's `flow_est` broad modality: V/F with the flow estimated from the broad view's frames (no ground truth)."""

from __future__ import annotations

import csv
import json

import pytest
import torch
import torch.nn.functional as F

from tests.methods._fit import REPO, run_videossl, tiny_synth
from videossl.errors import VideosslError
from videossl.methods.brave import BraVe, flow_view
from videossl.models import Small3D
from videossl.models.flow_estimate import estimate_flow


def brave(**kw) -> BraVe:
    return BraVe(Small3D(width=4), Small3D(width=4, in_channels=2), broad_modality="flow_est", proj_hidden=8, out_dim=4,
                 pred_hidden=8, **kw)


def shifted_clip(dx: int, dy: int, frames: int = 4, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    tex = F.interpolate(torch.rand(1, 3, 12, 12, generator=g), size=(size + 16, size + 16), mode="bicubic",
                        align_corners=False).clamp(0, 1)[0]
    return torch.stack([tex[:, 8 - k * dy:8 - k * dy + size, 8 - k * dx:8 - k * dx + size] for k in range(frames)], 1)[None]


def test_flow_est_is_the_estimated_flow_through_flow_view():
    m = brave()
    clip = shifted_clip(2, -1).requires_grad_(True)
    x = m.broad_input(clip, None)
    assert x.shape == (1, 2, 4, 32, 32) and not x.requires_grad
    want = flow_view(estimate_flow(clip.detach()), torch.arange(4)[None], 32)  # the GT modality's resize / scale
    assert torch.equal(x, want)
    inner = x[0, :, :, 8:-8, 8:-8]  # frame t: flow t -> t+1 / 2 px; the last frame repeats the previous
    assert inner[0].mean() == pytest.approx(1.0, abs=0.05) and inner[1].mean() == pytest.approx(-0.5, abs=0.05)
    assert torch.equal(x[:, :, 3], x[:, :, 2])


def test_estimator_choice_and_options_are_checked_at_init():
    assert brave(flow_estimator="dis", flow_estimator_opts={"preset": "fast"}).flow_estimator_opts == {"preset": "fast"}
    with pytest.raises(VideosslError, match="unknown flow estimator 'tvl1'"):
        brave(flow_estimator="tvl1")
    with pytest.raises(VideosslError, match="no option.*levels_max"):
        brave(flow_estimator_opts={"levels_max": 3})


def test_fit_with_estimated_flow_runs_without_ground_truth(tmp_path_factory, tmp_path):
    """`videossl fit` of the V/F recipe for 3 steps: no `data.extras`, so no ground truth is read."""
    data = tiny_synth(tmp_path_factory)
    views = [{"name": "narrow", "sampler": "narrow", "frames": 4, "stride": 1, "size": 24, "augment": {"blur_p": 0.0}},
             {"name": "broad", "sampler": "broad", "frames": 8, "stride": 1, "size": 16, "augment": {"blur_p": 0.0}}]
    small = {"class_path": "videossl.models.Small3D", "init_args": {"width": 8}}
    r = run_videossl(
        "fit", "--config", str(REPO / "recipes/brave/synthetic_vf_est.yaml"), "--data.data_dir", str(data),
        "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.max_steps", "3", "--trainer.log_every_n_steps", "1",
        "--trainer.limit_val_batches", "0", "--model.init_args.optim.total", "3", "--data.batch_size", "8",
        "--data.num_workers", "0", "--data.train_views", json.dumps(views),
        "--model.init_args.narrow_encoder", json.dumps(small),
        "--model.init_args.broad_encoder", json.dumps({**small, "init_args": {"width": 8, "in_channels": 2}}),
        "--model.init_args.proj_hidden", "32", "--model.init_args.pred_hidden", "32", "--model.init_args.out_dim", "16",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false")
    assert "max_steps=3" in r.stderr + r.stdout
    rows = csv.DictReader(open(tmp_path / "run" / "metrics.csv"))
    losses = [float(x["train/loss_step"]) for x in rows if x.get("train/loss_step")]
    assert len(losses) == 3 and all(0 < v < 4 for v in losses)
    sd = torch.load(tmp_path / "run" / "encoder.pt", weights_only=True)
    assert sd and all(k.startswith("encoder.") for k in sd)
