"""Flow estimators against the synthetic ground truth (videossl.eval.flow.estimator_agreement) and the
tools/flow_estimate_epe.py report, on a tiny set decoded from its H.264 shards."""

from __future__ import annotations

import json
import runpy
import shutil
from pathlib import Path

import pytest
import torch

from videossl.errors import VideosslError
from videossl.eval import flow as FE

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def synth64(tmp_path_factory):
    from videossl.data.shards.synthetic import generate

    out = tmp_path_factory.mktemp("synth64")
    generate(out, 40, seed=0, size=64, num_frames=8, progress=False)  # 24 train videos
    return out


def test_forward_gt_alignment():
    fwd = torch.arange(5, dtype=torch.float32).view(1, 5, 1, 1, 1).expand(1, 5, 2, 2, 2)
    batch = {"indices": [torch.tensor([[1, 2, 3]])], "flow": {"forward": fwd, "backward": -fwd},
             "mask": torch.zeros(1, 6, 2, 2, dtype=torch.uint8)}
    flow, _ = FE.gt_for_clip(batch, direction="forward")
    assert flow[0, :, 0, 0, 0].tolist() == [1.0, 2.0]  # pair (t, t+1) -> forward[t]
    with pytest.raises(VideosslError, match="direction"):
        FE.gt_for_clip(batch, direction="sideways")


def test_farneback_is_well_below_zero_flow_where_things_move(synth64):
    """Over 24 videos: single videos can be ambiguous for any local estimator (a drifting linear-gradient
    background: the aperture problem; fine stripes: temporal aliasing), so the bound is on the mean."""
    r = FE.estimator_agreement(str(synth64), "train", "farneback", [32, 64])
    assert r["ground_truth"] and r["frames"] == 8
    for size in (32, 64):
        m = r["sizes"][size]["metrics"]
        assert r["sizes"][size]["videos"] == 24
        assert m["epe_moving_zero"] > 0.3  # the zero-flow baseline is not trivially small at this size
        assert m["epe_moving"] < 0.6 * m["epe_moving_zero"], (size, m)
        assert m["epe_fg"] < 0.75 * m["epe_fg_zero"], (size, m)
        # on all pixels (mostly static background) the estimate stays small; smoothing bleeds motion
        # into the static pixels next to the object, so it is not below zero flow there
        assert m["epe_all"] < 0.5, (size, m)
    # the vectors are in px of each size: halving the resolution halves the baseline
    z32, z64 = (r["sizes"][s]["metrics"]["epe_all_zero"] for s in (32, 64))
    assert z32 == pytest.approx(z64 / 2, rel=0.15)


def test_the_tool_reports_epe_with_ground_truth_and_cost_only_without(synth64, tmp_path, capsys):
    main = runpy.run_path(str(ROOT / "tools" / "flow_estimate_epe.py"), run_name="flow_estimate_epe")["main"]
    assert main(["--data", str(synth64), "--split", "train", "--sizes", "32", "--max-videos", "2",
                 "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "| EPE all | zero all |" in out and "| 32 | 2 |" in out
    assert json.loads((tmp_path / "r.json").read_text())["sizes"]["32"]["videos"] == 2
    real = tmp_path / "no-gt"  # the same videos as a set without ground truth (like real video)
    shutil.copytree(synth64, real)
    manifest = json.loads((real / "manifest.json").read_text())
    manifest.pop("ground_truth")
    (real / "manifest.json").write_text(json.dumps(manifest))
    assert main(["--data", str(real), "--split", "train", "--sizes", "32", "--frames", "4", "--stride", "2",
                 "--max-videos", "2", "--estimator", "dis"]) == 0
    out = capsys.readouterr().out
    assert "EPE" not in out and "| size | videos | mean ‖flow‖ | decode ms/clip | estimate ms/clip |" in out
    assert main(["--data", str(synth64), "--split", "train", "--stride", "2"]) == 2
    assert "consecutive frames" in capsys.readouterr().err
