"""Flow estimated from frames (videossl.models.flow_estimate): the convention, a known shift, errors, RAFT's plumbing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from videossl.errors import VideosslError
from videossl.models import flow_estimate as FE


def translated_clip(dx: int, dy: int, frames: int = 4, size: int = 64) -> torch.Tensor:
    """A smooth random texture whose content moves by (+dx, +dy) px per frame: (1, 3, T, size, size) in [0, 1]."""
    g = torch.Generator().manual_seed(0)
    tex = F.interpolate(torch.rand(1, 3, 24, 24, generator=g), size=(size + 32, size + 32), mode="bicubic",
                        align_corners=False).clamp(0, 1)[0]
    return torch.stack([tex[:, 16 - k * dy:16 - k * dy + size, 16 - k * dx:16 - k * dx + size] for k in range(frames)], 1)[None]


@pytest.mark.parametrize("method", ["farneback", "dis"])
@pytest.mark.parametrize(("dx", "dy"), [(2, 1), (-1, 3)])
def test_a_translated_texture_gives_its_shift_in_the_interior(method, dx, dy):
    clip = translated_clip(dx, dy)
    flow = FE.estimate_flow(clip, method)
    assert flow.shape == (1, 3, 64, 64, 2) and flow.dtype == torch.float32
    inner = flow[0, :, 12:-12, 12:-12]  # frame t → t+1, (dx, dy): the synthetic set's `forward` convention
    err = (inner - torch.tensor([float(dx), float(dy)])).norm(dim=-1)
    assert err.max() < 0.5, (method, err.max())


def test_the_estimate_is_on_the_clip_device_and_batched_per_clip():
    a, b = translated_clip(2, 0), translated_clip(0, -2)
    flow = FE.estimate_flow(torch.cat([a, b]))
    assert flow.shape == (2, 3, 64, 64, 2) and flow.device == a.device
    assert flow[0, :, 20:-20, 20:-20, 0].mean() == pytest.approx(2.0, abs=0.1)
    assert flow[1, :, 20:-20, 20:-20, 1].mean() == pytest.approx(-2.0, abs=0.1)


def test_farneback_pyramid_levels_follow_the_frame_size():
    assert [FE.farneback_levels(s, s) for s in (8, 16, 32, 64, 112, 128, 224)] == [1, 2, 3, 4, 4, 5, 5]
    assert FE.farneback_levels(32, 200) == 3  # the short side decides


def test_resize_flow_rescales_the_vectors_with_the_image():
    flow = torch.zeros(1, 8, 16, 2)
    flow[..., 0], flow[..., 1] = 2.0, 1.0
    out = FE.resize_flow(flow, 4, 32)
    assert out.shape == (1, 4, 32, 2)
    assert torch.allclose(out[..., 0], torch.full((1, 4, 32), 4.0)) and torch.allclose(out[..., 1], torch.full((1, 4, 32), 0.5))


def test_bad_input_and_options_are_clear_errors():
    clip = translated_clip(1, 0)
    with pytest.raises(VideosslError, match="unknown flow estimator 'tvl1'.*contrib"):
        FE.estimate_flow(clip, "tvl1")
    with pytest.raises(VideosslError, match="no option.*window.*winsize"):
        FE.estimate_flow(clip, "farneback", window=5)
    with pytest.raises(VideosslError, match=r"frames in \[0, 1\].*normalised"):
        FE.estimate_flow(clip * 2 - 1)
    with pytest.raises(VideosslError, match="T >= 2"):
        FE.estimate_flow(clip[:, :, :1])
    with pytest.raises(VideosslError, match="unknown preset"):
        FE.estimate_flow(clip, "dis", preset="slow")


def test_raft_without_local_weights_names_the_file_and_the_url(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    FE._raft_model.cache_clear()
    with pytest.raises(VideosslError, match=r"raft_small_C_T_V2-01064c6d\.pth.*https://download\.pytorch\.org/models/"):
        FE.estimate_flow(translated_clip(1, 0), "raft")
    with pytest.raises(VideosslError, match="raft_large"):
        FE.estimate_flow(translated_clip(1, 0), "raft", arch="raft_large", weights="C_T_SKHT_V2")
    with pytest.raises(VideosslError, match="unknown arch"):
        FE.estimate_flow(translated_clip(1, 0), "raft", arch="raft_tiny", weights="random")


def test_raft_random_weights_run_on_small_odd_frames_and_keep_the_caller_rng():
    """Random weights: plumbing only (padding / resizing to RAFT's 128 px and multiples of 8, the shape back)."""
    clip = translated_clip(1, 0, frames=3, size=36)[..., :30]  # 36 x 30: neither divisible by 8 nor >= 128
    torch.manual_seed(5)
    want = torch.rand(1)
    torch.manual_seed(5)
    flow = FE.estimate_flow(clip, "raft", weights="random", num_flow_updates=1, batch=1)
    assert torch.rand(1) == want  # the fixed random init did not draw from the global generator
    assert flow.shape == (1, 2, 36, 30, 2) and torch.isfinite(flow).all()


def test_raft_loads_a_local_state_dict(tmp_path):
    import torchvision.models.optical_flow as tvf

    torch.manual_seed(1)
    ref = tvf.raft_small(weights=None).eval()
    path = tmp_path / "raft_small.pth"
    torch.save(ref.state_dict(), path)
    FE._raft_model.cache_clear()
    model = FE._raft_model("raft_small", str(path), "cpu")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values(), strict=True))
    torch.save({"bogus": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(VideosslError):
        FE._raft_model("raft_small", str(tmp_path / "bad.pth"), "cpu")
