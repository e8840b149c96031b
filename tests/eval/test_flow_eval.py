"""`videossl eval flow`: metric functions against hand values, GT alignment, and the CLI end to end."""

import argparse
import json
from pathlib import Path

import pytest
import torch

from videossl.errors import VideosslError
from videossl.eval import flow as FE
from videossl.eval.commands import flow as flow_cmd

ROOT = Path(__file__).resolve().parents[2]


def test_mask_iou_hand():
    pred = torch.zeros(1, 4, 4, dtype=torch.long)
    gt = torch.zeros(1, 4, 4, dtype=torch.long)
    pred[0, :2, :2] = 1  # 4 px
    gt[0, :2, :3] = 1  # 6 px, overlap 4 -> IoU 4/6
    assert FE.mask_iou(pred, gt, [1]).item() == pytest.approx(4 / 6)
    # label 2 empty in both -> 1.0; averaged over the two labels
    assert FE.mask_iou(pred, gt, [1, 2]).item() == pytest.approx((4 / 6 + 1.0) / 2)


def test_propagation_follows_backward_flow():
    m0 = torch.zeros(8, 8, dtype=torch.long)
    m0[2:4, 2:4] = 1
    m1 = torch.zeros_like(m0)
    m1[2:4, 3:5] = 1  # the object moved 1 px right: backward flow at t+1 is (-1, 0)
    flow = torch.zeros(2, 8, 8)
    flow[0] = -1.0
    out = FE.propagation_ious(m0, [flow], [m1], ks=(1,))
    assert out[1] == pytest.approx(1.0)
    out0 = FE.propagation_ious(m0, [torch.zeros_like(flow)], [m1], ks=(1,))
    assert out0[1] == pytest.approx(2 / 6)  # copy-mask baseline
    assert FE.end_point_error(flow, torch.zeros_like(flow)).mean().item() == pytest.approx(1.0)


def test_gt_alignment_and_errors():
    T0, H, W = 6, 4, 4
    bwd = torch.arange(T0 - 1, dtype=torch.float32).view(1, T0 - 1, 1, 1, 1).expand(1, T0 - 1, H, W, 2)
    mask = torch.arange(T0).view(1, T0, 1, 1).expand(1, T0, H, W)
    batch = {"indices": [torch.tensor([[2, 3, 4]])], "flow": {"backward": bwd}, "mask": mask}
    flow, masks = FE.gt_for_clip(batch)
    assert flow.shape == (1, 2, 2, H, W) and flow[0, :, 0, 0, 0].tolist() == [2.0, 3.0]  # pair (t, t+1) -> backward[t]
    assert masks[0, :, 0, 0].tolist() == [2, 3, 4]
    batch["indices"] = [torch.tensor([[0, 2, 4]])]
    with pytest.raises(VideosslError, match="consecutive frames"):
        FE.gt_for_clip(batch)
    with pytest.raises(VideosslError, match="no flow.npz"):
        FE.gt_for_clip({"indices": batch["indices"]})


@pytest.fixture(scope="module")
def tiny_synth(tmp_path_factory):
    from videossl.data.shards.synthetic import generate

    out = tmp_path_factory.mktemp("synth")
    generate(out, 8, workers=1, progress=False, size=32, num_frames=8)  # 8 videos, all in 'train'
    return out


def test_cli_end_to_end(tiny_synth, tmp_path):
    out = tmp_path / "flow-eval"
    args = argparse.Namespace(run=None, config=str(ROOT / "recipes/flow_ae/synthetic.yaml"), ckpt=None, random=True,
                              data=str(tiny_synth), split="train", frames=None, max_videos=3, batch_size=2,
                              num_workers=0, panels=1, out=str(out), device="cpu", seed=0)
    assert flow_cmd.run_cli(args) == 0
    r = json.loads((out / "results.json").read_text())
    m = r["metrics"]
    assert r["videos"] == 3 and r["frames"] == 8 and len(r["panels"]) == 1 and Path(r["panels"][0]).is_file()
    # an untrained model forecasts zero flow: EPE = zero-flow baseline, PSNR = copy-last-frame
    assert m["epe_all"] == pytest.approx(m["epe_all_zero"], rel=1e-4)
    assert m["psnr"] == pytest.approx(m["psnr_copy_last"], abs=1e-2)
    assert m["iou_model_k1"] == pytest.approx(m["iou_copy_mask_k1"], abs=1e-6)
    # propagation with the ground-truth flow beats copying the mask
    assert m["iou_gt_flow_k5"] > m["iou_copy_mask_k5"]
    assert "iou_model_k10" not in m  # 8 frames, burn-in 1: a 10-step chain does not fit
    assert {"iou_model_k1", "iou_model_k2", "iou_model_k5"} <= set(m)
