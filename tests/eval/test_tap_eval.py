"""`videossl eval tap`: the TAP-Vid pickle format, the GT-flow oracle on the synthetic set, the correspondence
probe on a feature map with a known answer, dense encoder features, and the command end to end."""

import json
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from videossl.data.tapvid import TapVideo, read_tapvid_pickle, write_tapvid_pickle
from videossl.errors import VideosslError
from videossl.eval import tap as TAP
from videossl.eval import tapvid as TV
from videossl.eval import tracking as TR


# ------------------------------------------------------------------------------------ TAP-Vid pickles
def _tap_videos(n=2, T=5, H=24, W=32, N=3):
    rng = np.random.default_rng(1)
    return [TapVideo(f"video{i}", rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8),
                     rng.uniform(0, 1, (N, T, 2)).astype(np.float32), rng.random((N, T)) < 0.3) for i in range(n)]


@pytest.mark.parametrize("named", [True, False])
def test_tapvid_pickle_round_trip(tmp_path, named):
    videos = _tap_videos()
    path = write_tapvid_pickle(tmp_path / "x.pkl", videos, named=named)
    raw = pickle.loads(path.read_bytes())
    # the published layout: a dict by name (DAVIS) or a list (RGB-Stacking / Kinetics) of {video, points, occluded}
    assert isinstance(raw, dict if named else list)
    first = raw["video0"] if named else raw[0]
    assert set(first) == {"video", "points", "occluded"}
    assert first["video"].dtype == np.uint8 and first["video"].shape == (5, 24, 32, 3)
    assert first["points"].dtype == np.float32 and first["points"].shape == (3, 5, 2)
    assert first["occluded"].dtype == bool and first["occluded"].shape == (3, 5)
    back = list(read_tapvid_pickle(path))
    assert [v.name for v in back] == (["video0", "video1"] if named else ["x-0000", "x-0001"])
    for a, b in zip(videos, back, strict=True):
        assert np.array_equal(a.frames, b.frames) and np.array_equal(a.points, b.points)
        assert np.array_equal(a.occluded, b.occluded)


def test_tapvid_pickle_jpeg_frames_and_items(tmp_path):
    videos = _tap_videos(n=1, H=16, W=16)
    videos[0].frames[:] = 128  # flat grey survives JPEG
    path = write_tapvid_pickle(tmp_path / "k.pkl", videos, named=False, encode_jpeg=True)
    assert isinstance(pickle.loads(path.read_bytes())[0]["video"][0], bytes)  # Kinetics: encoded frames
    (v,) = read_tapvid_pickle(path)
    assert v.frames.shape == (5, 16, 16, 3) and np.abs(v.frames.astype(int) - 128).max() <= 2
    (item,) = TAP.tapvid_items(str(path))
    assert item.frames.shape == (5, 256, 256, 3)  # resized to TAP-Vid's 256x256
    # normalised points x 256 in the pixel-centre convention: to_256 gives back exactly points x 256
    assert np.allclose(TV.to_256(item.target, 256, 256), videos[0].points * 256, atol=1e-4)


def test_tapvid_pickle_errors(tmp_path):
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps({"v": {"video": np.zeros((2, 4, 4, 3), np.uint8), "points": np.zeros((1, 3, 2))}}))
    with pytest.raises(VideosslError, match="occluded"):
        list(read_tapvid_pickle(bad))
    bad.write_bytes(pickle.dumps({"v": {"video": np.zeros((2, 4, 4, 3), np.uint8), "points": np.zeros((1, 3, 2)),
                                        "occluded": np.zeros((1, 3), bool)}}))
    with pytest.raises(VideosslError, match="do not fit 2 frames"):
        list(read_tapvid_pickle(bad))


# ------------------------------------------------------------------------------------ synthetic set, oracle
@pytest.fixture(scope="module")
def synth_occluded(tmp_path_factory):
    from videossl.data.shards.synthetic import generate

    out = tmp_path_factory.mktemp("synth_tap")
    generate(out, 16, progress=False, distractor_prob=1.0, num_tracks=12)  # 64 px, 16 frames, always a distractor
    return out


def test_synthetic_items_read_tracks_as_targets(synth_occluded):
    items = list(TAP.synthetic_items(str(synth_occluded), "test"))
    assert items and all(it.frames.shape == (16, 64, 64, 3) and it.frames.dtype == np.uint8 for it in items)
    it = items[0]
    assert it.target.shape == (12, 16, 2) and it.occluded.shape == (12, 16)
    assert it.forward.shape == (15, 64, 64, 2) and it.mask.shape == (16, 64, 64)
    assert any(item.occluded.any() for item in items)  # the distractor hides points somewhere


def test_gt_flow_oracle_reaches_095(synth_occluded):
    items = list(TAP.synthetic_items(str(synth_occluded), "train")) + list(TAP.synthetic_items(str(synth_occluded), "test"))
    oracle = TAP.evaluate_items(items, TAP.gt_flow_tracker())
    static = TAP.evaluate_items(items, TAP.static_tracker())
    for mode in TV.QUERY_MODES:
        assert oracle["means"][mode]["average_pts_within_thresh"] >= 0.95
        assert oracle["means"][mode]["occlusion_accuracy"] >= 0.95
        assert oracle["means"][mode]["average_jaccard"] > static["means"][mode]["average_jaccard"] + 0.5
        assert static["means"][mode]["average_pts_within_thresh"] < 0.5  # the objects move


def test_gt_flow_oracle_exact_on_translation():
    T, H, W = 4, 20, 20
    mask = np.zeros((T, H, W), np.uint8)
    for t in range(T):
        mask[t, 5:12, 3 + 2 * t:10 + 2 * t] = 1  # a square moving 2 px right per frame
    fwd = np.zeros((T - 1, H, W, 2), np.float32)
    bwd = np.zeros((T - 1, H, W, 2), np.float32)
    fwd[..., 0] = np.where(mask[:-1] == 1, 2.0, 0.0)
    bwd[..., 0] = np.where(mask[1:] == 1, -2.0, 0.0)
    q = np.array([[1.0, 8.0, 7.0]])  # (t, y, x) at frame 1
    tracks, occ = TR.gt_flow_tracks(q, fwd, bwd, mask)
    assert np.allclose(tracks[0, :, 0], [5, 7, 9, 11]) and np.allclose(tracks[0, :, 1], 8)
    assert not occ.any()


# ------------------------------------------------------------------------------------ correspondence probe
class PatchFeatures(torch.nn.Module):
    """Dense features with a known answer: the 5x5 RGB patch around each pixel (optionally pooled by 2)."""

    def __init__(self, pool: int = 1):
        super().__init__()
        self.pool = pool
        self.feature_stride = (1, pool)

    def forward_features(self, x):
        B, C, T, H, W = x.shape
        f = F.unfold(x.permute(0, 2, 1, 3, 4).reshape(B * T, C, H, W), 5, padding=2).view(B * T, C * 25, H, W)
        if self.pool > 1:
            f = F.avg_pool2d(f, self.pool)
        return f.view(B, T, *f.shape[1:]).permute(0, 2, 1, 3, 4)


def _moving_noise(T=5, size=40, dx=2, dy=1):
    base = np.random.default_rng(0).random((3, size, size))
    frames = np.stack([np.roll(base, (t * dy, t * dx), axis=(1, 2)) for t in range(T)], 1)
    return torch.tensor(frames[None]).float()


def test_correspondence_recovers_known_motion():
    clip = _moving_noise()
    q = np.array([[0.0, 10.0, 12.0], [2.0, 20.0, 20.0]])  # (t, y, x)
    tracks, score = TR.correspondence(PatchFeatures(), clip, q, tau=0.01, window=1)
    t = np.arange(5)
    assert np.allclose(tracks[0], np.stack([12 + 2 * t, 10 + t], 1), atol=1e-3)
    assert np.allclose(tracks[1], np.stack([20 + 2 * (t - 2), 20 + (t - 2)], 1), atol=1e-3)
    assert np.allclose(score, 1.0, atol=1e-5)


def test_correspondence_pooled_map_maps_cells_back_to_pixels():
    clip = _moving_noise(dx=4, dy=0)  # 2 cells of a stride-2 map per frame
    q = np.array([[0.0, 10.5, 10.5]])  # the centre of cell (5, 5) of the pooled map
    tracks, _ = TR.correspondence(PatchFeatures(pool=2), clip, q, tau=0.005, window=1)
    assert np.allclose(tracks[0, :, 0], 10.5 + 4 * np.arange(5), atol=0.05)
    assert np.allclose(tracks[0, :, 1], 10.5, atol=0.05)


def test_fit_threshold_separates_scores():
    T = 4
    target = np.zeros((2, T, 2))
    occ = np.array([[False, True, True, False], [False, False, False, False]])
    q = TV.sample_queries_first(target, occ)
    score = np.where(occ, 0.2, 0.9)
    th, aj = TR.fit_threshold([{"queries": q.points, "target": q.target, "occluded": q.occluded, "tracks": q.target,
                                "score": score, "size": (64, 64)}], "first")
    assert 0.2 < th <= 0.9 and aj == pytest.approx(1.0)


@pytest.mark.parametrize("name,kwargs,stride", [
    ("small3d", {"width": 4}, (4, 8)),
    ("r3d_18", {"width": 0.125}, (8, 16)),
    ("tsm_resnet", {"layers": (1, 1, 1, 1), "width": 0.125}, (1, 32)),
])
def test_forward_features_shape_and_stride(name, kwargs, stride):
    from videossl.models.encoders import build_encoder

    enc = build_encoder(name, **kwargs).eval()
    x = torch.rand(1, 3, 8, 64, 64)
    f = enc.forward_features(x)
    assert enc.feature_stride == stride
    assert f.shape[0] == 1 and f.shape[1] == enc.feature_dim
    assert f.shape[2:] == (max(1, 8 // stride[0]), 64 // stride[1], 64 // stride[1])
    with torch.no_grad():  # additive: the pooled forward is unchanged
        assert enc(x).shape == (1, enc.feature_dim)


def test_flow_encoder_forward_features_is_causal():
    from videossl.models.convlstm import FlowEncoder

    enc = FlowEncoder(preset="modern", in_channels=1, motion_input=True).eval()
    x = torch.rand(1, 3, 5, 32, 32)
    with torch.no_grad():
        f = enc.forward_features(x)
        y = x.clone()
        y[:, :, 3:] = torch.rand_like(y[:, :, 3:])
        g = enc.forward_features(y)
    assert enc.feature_stride == (1, enc.stride)
    assert f.shape == (1, enc.hidden_channels, 5, 32 // enc.stride, 32 // enc.stride)
    assert torch.allclose(f[:, :, :3], g[:, :, :3]) and not torch.allclose(f[:, :, 3:], g[:, :, 3:])


# ------------------------------------------------------------------------------------ the command
def test_eval_tap_end_to_end(synth48, tmp_path, videossl_main):
    import av

    out = tmp_path / "static"
    assert videossl_main(["eval", "tap", "--baseline", "gt-flow", "--data", str(synth48), "--out", str(out),
                          "--overlays", "1"]) == 0
    d = json.loads((out / "results.json").read_text())
    assert [r["query_mode"] for r in d["results"]] == ["first", "strided"]
    assert d["results"][0]["average_pts_within_thresh"] >= 0.9
    assert len(d["per_video"]) == 2 * d["results"][0]["num_test_videos"]
    report = (out / "report.md").read_text()
    assert "## Protocol" in report and "256x256" in report and "## Per video" in report
    assert (out / "per_video.csv").read_text().count("\n") == len(d["per_video"]) + 1
    (ov,) = d["overlays"]
    with av.open(ov) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 8 and frames[0].shape == (256, 256, 3)  # 32 px scaled x8 so a person can see it

    enc = json.dumps({"class_path": "videossl.models.encoders.Small3D", "init_args": {"width": 4}})
    out2 = tmp_path / "probe"
    assert videossl_main(["eval", "tap", "--encoder", enc, "--random-only", "--data", str(synth48), "--out", str(out2),
                          "--overlays", "0", "--modes", "first", "--max-val-videos", "4"]) == 0
    d2 = json.loads((out2 / "results.json").read_text())
    (r,) = d2["results"]
    assert r["name"] == "random-init" and 0.0 <= r["average_jaccard"] <= 1.0 and "threshold" in r
    assert "occlusion threshold" in (out2 / "report.md").read_text()

    from videossl.eval.compare import compare
    rows = compare([str(out / "results.json"), str(out2 / "results.json")])
    assert {r["encoder"] for r in rows} >= {"gt-flow oracle [first]", "random-init [first]"}
    assert all(r["AJ %"] != "-" for r in rows)


def test_eval_tap_needs_a_tracker(synth48, tmp_path, videossl_main, capsys):
    assert videossl_main(["eval", "tap", "--data", str(synth48), "--out", str(tmp_path / "x")]) == 2
    assert "--baseline" in capsys.readouterr().err


def test_tapnext_fit_then_eval_tap(synth48, tmp_path, videossl_main):
    """`videossl fit` of the TAPNext recipe for 2 steps (tiny model, 32 px), then `eval tap --run` evaluates the
    trained tracker itself (not a probe)."""
    import warnings
    from pathlib import Path

    from videossl.train import run_lightning

    run = tmp_path / "tapnext-run"
    repo = Path(__file__).resolve().parents[2]
    view = {"name": "clip", "sampler": "random", "frames": 4, "stride": 1, "size": 32,
            "augment": {"scale": [1.0, 1.0], "ratio": [1.0, 1.0], "flip_p": 0.0, "blur_p": 0.0, "jitter_p": 0.0,
                        "grayscale_p": 0.0}}
    args = ["--config", str(repo / "recipes/tapnext/synthetic.yaml"), "--data.data_dir", str(synth48),
            "--trainer.default_root_dir", str(run), "--data.batch_size", "4", "--data.num_workers", "0",
            "--data.train_views", json.dumps([view]),
            "--data.eval_views", json.dumps([{**view, "sampler": "uniform", "train": False, "num_clips": 1, "crops": 1}]),
            "--model.init_args.encoder", json.dumps({"class_path": "videossl.models.tapnext.TAPNext", "init_args": {
                "img_size": 32, "width": 32, "depth": 1, "heads": 2, "isolate_queries": True}}),
            "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--fresh"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert run_lightning("fit", args) == 0
    assert (run / "checkpoints" / "last.ckpt").is_file()
    out = tmp_path / "tap"
    assert videossl_main(["eval", "tap", "--run", str(run), "--data", str(synth48), "--out", str(out), "--overlays", "0",
                          "--max-videos", "2"]) == 0
    d = json.loads((out / "results.json").read_text())
    assert d["kind"] == "tap-tapnext" and d["results"][0]["name"] == "tapnext"
    assert "TAPNext" in (out / "report.md").read_text()


def test_flow_ae_tracker_chains_forecast_backward_flow():
    """The flow-AE baseline: forecasts B_{t+1->t} for t >= burn_in; forwards it inverts them, backwards it applies them."""
    T, H, W = 6, 24, 24

    class FakeFlowAE:
        burn_in = 1

        def forecast(self, clip):
            steps = list(range(1, T - 1))  # no forecast for step 0 (burn-in): zero flow there
            flow = torch.zeros(1, len(steps), 2, H, W)
            flow[:, :, 0] = -2.0  # the scene moves +2 px in x per frame: B(q) = p_t - p_{t+1} = (-2, 0)
            return {"steps": steps, "flow": flow}

    item = TAP.TapItem("v", np.zeros((T, H, W, 3), np.uint8), np.zeros((1, T, 2)), np.zeros((1, T), bool))
    q = np.array([[2.0, 5.0, 6.0]])  # (t, y, x) at frame 2
    tracks, occ = TAP.flow_ae_tracker(FakeFlowAE())(item, q, "strided")
    # frame 1 from 2: +B_{2->1} = -2; frame 0 from 1: B_{1->0} is the burn-in step: zero flow
    assert np.allclose(tracks[0, :, 0], [4, 4, 6, 8, 10, 12]) and np.allclose(tracks[0, :, 1], 5)
    assert not occ.any()
    q = np.array([[0.0, 5.0, 20.0]])  # runs out of the 24-px frame: occluded there
    tracks, occ = TAP.flow_ae_tracker(FakeFlowAE())(item, q, "first")
    assert occ[0].tolist() == [False, False, False, True, True, True]


def test_vivit_forward_features_are_the_patch_tokens():
    from videossl.models.vivit import ViViT

    torch.manual_seed(0)
    m = ViViT(num_frames=8, img_size=32, tubelet=(2, 8, 8), embed_dim=32, depth=1, num_heads=2).eval()
    x = torch.rand(1, 3, 8, 32, 32)
    with torch.no_grad():
        f = m.forward_features(x)
        assert f.shape == (1, 32, 4, 4, 4) and m.feature_stride == (2, 8)
        assert torch.allclose(f.mean((2, 3, 4)), m(x), atol=1e-5)  # mean pooling of these tokens is forward()
    tracks, score = TR.correspondence(m, x, np.array([[0.0, 10.0, 12.0]]))
    assert tracks.shape == (1, 8, 2) and score.shape == (1, 8)


def test_eval_tap_on_a_tapvid_pickle(tmp_path, videossl_main):
    videos = _tap_videos(n=2, T=6, H=20, W=30)
    for v in videos:  # a static scene: the static baseline is exact wherever the point is visible
        v.points[:] = v.points[:, :1]
    path = write_tapvid_pickle(tmp_path / "tapvid_davis.pkl", videos)
    out = tmp_path / "out"
    assert videossl_main(["eval", "tap", "--baseline", "static", "--tapvid", str(path), "--out", str(out),
                          "--overlays", "1"]) == 0
    d = json.loads((out / "results.json").read_text())
    assert d["split"] is None and d["dataset"].endswith("tapvid_davis.pkl")
    r = d["results"][0]
    assert r["average_pts_within_thresh"] == pytest.approx(1.0)  # static scene, static tracker
    assert r["num_test_videos"] == 2 and len(d["overlays"]) == 1
    assert videossl_main(["eval", "tap", "--baseline", "gt-flow", "--tapvid", str(path), "--out", str(out)]) == 2


def test_synth_preset_tap_renders_at_256():
    from videossl.data.shards.synthetic import make_config, make_sample

    cfg = make_config("tap", num_frames=4)
    assert (cfg.size, cfg.num_tracks) == (256, 32)
    _, _, _, members = make_sample(0, cfg, seed=0, num_videos=8)
    from videossl.data.shards.format import load_npz

    tr = load_npz(members["tracks.npz"])
    assert tr["points"].shape == (4, 32, 2) and tr["points"].max() < 256
