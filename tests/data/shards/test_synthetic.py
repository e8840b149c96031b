"""The synthetic set's ground truth agrees with its pixels, and its class is in the motion only."""

from __future__ import annotations

import hashlib
import io
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from videossl.data.shards.format import iter_tar_samples, load_manifest, load_npy, load_npz, split_shard_paths
from videossl.data.shards.synthetic import CLASSES, generate, make_config, render, sample_params


def _sample_at(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear sample of img (H, W, C) at pixel coordinates (x, y) (pixel centres at integers)."""
    H, W = img.shape[:2]
    grid = torch.stack([torch.tensor(x) / (W - 1) * 2 - 1, torch.tensor(y) / (H - 1) * 2 - 1], -1)[None].float()
    src = torch.tensor(img, dtype=torch.float32).permute(2, 0, 1)[None]
    return F.grid_sample(src, grid, align_corners=True, mode="bilinear")[0].permute(1, 2, 0).numpy()


def _erode(m: np.ndarray) -> np.ndarray:
    t = torch.tensor(m[None, None].astype(np.float32))
    return (-F.max_pool2d(-t, 3, 1, 1))[0, 0].numpy() > 0.5


def _videos(n=24, **over):
    cfg = make_config(noise_std=(0.0, 0.0), **over)
    for i in range(n):
        p = sample_params(cfg, i, i % len(CLASSES), seed=3)
        yield cfg, p, render(p)


@pytest.mark.parametrize("direction", ["backward", "forward"])
def test_flow_warps_frames_onto_each_other(direction):
    """Frame t+1 = frame t sampled at x + backward flow (and frame t = t+1 at x + forward flow)."""
    errors = []
    for cfg, _, r in _videos():
        S = cfg.size
        y, x = np.mgrid[0:S, 0:S].astype(np.float64)
        for t in range(cfg.num_frames - 1):
            if direction == "backward":
                src, dst, flow, m_src, m_dst = r.clean[t], r.clean[t + 1], r.backward[t], r.mask[t], r.mask[t + 1]
            else:
                src, dst, flow, m_src, m_dst = r.clean[t + 1], r.clean[t], r.forward[t], r.mask[t + 1], r.mask[t]
            sx, sy = x + flow[..., 0], y + flow[..., 1]
            warped = _sample_at(src, sx, sy)
            # interior foreground: away from object edges, where bilinear sampling mixes layers
            ix = np.clip(np.round(sx).astype(int), 0, S - 1)
            iy = np.clip(np.round(sy).astype(int), 0, S - 1)
            ok = _erode(m_dst == 1) & _erode(m_src == 1)[iy, ix]
            if ok.sum() > 10:
                errors.append(np.abs(warped - dst).mean(-1)[ok].mean())
    errors = np.array(errors)
    assert len(errors) > 100
    # stated tolerance: mean abs error on interior foreground <= 1.5 grey levels per pair on average,
    # and <= 4 for every frame pair (textures are smooth; error is bilinear interpolation only)
    assert errors.mean() <= 1.5, errors.mean()
    assert errors.max() <= 4.0, errors.max()


def test_wrong_flow_direction_is_detectably_wrong():
    """Guard for the test above: using the forward flow where the backward one belongs fails it."""
    errs_right, errs_wrong = [], []
    for cfg, _, r in _videos(n=8, speed=(2.0, 2.5)):
        S = cfg.size
        y, x = np.mgrid[0:S, 0:S].astype(np.float64)
        for t in range(cfg.num_frames - 1):
            ok = _erode(r.mask[t + 1] == 1)
            for flow, errs in ((r.backward[t], errs_right), (r.forward[t], errs_wrong)):
                w = _sample_at(r.clean[t], x + flow[..., 0], y + flow[..., 1])
                errs.append(np.abs(w - r.clean[t + 1]).mean(-1)[ok].mean())
    assert np.mean(errs_wrong) > 3 * np.mean(errs_right)


def test_translation_flow_direction_matches_class():
    cfg = make_config(noise_std=(0.0, 0.0), distractor_prob=0.0)
    expect = {"translate_left": (-1, 0), "translate_right": (1, 0), "translate_up": (0, -1), "translate_down": (0, 1)}
    for name, (ex, ey) in expect.items():
        p = sample_params(cfg, 0, CLASSES.index(name), seed=0)
        r = render(p)
        obj = r.mask[:-1] == 1
        fx, fy = r.forward[..., 0][obj].mean(), r.forward[..., 1][obj].mean()
        assert np.sign(round(fx, 3)) == ex and np.sign(round(fy, 3)) == ey, (name, fx, fy)


def test_masks_match_colour_keyed_object_on_plain_background():
    ious = []
    for _cfg, p, _ in _videos(n=16, distractor_prob=0.0):
        p.bg_kind = "plain"
        p.obj.texture = "plain"
        p.drift = np.zeros(2)
        r = render(p)
        bg = np.array(p.bg_tex["c1"], np.float32)
        keyed = np.abs(r.clean.astype(np.float32) - bg).sum(-1) > 30  # everything not background-coloured
        m = r.mask == 1
        ious.append((keyed & m).sum() / (keyed | m).sum())
    assert min(ious) >= 0.95, ious


def test_rotation_direction_is_clockwise_on_screen():
    """rotate_cw: a point right of the centre moves down (y grows down), i.e. clockwise."""
    cfg = make_config(noise_std=(0.0, 0.0), distractor_prob=0.0)
    p = sample_params(cfg, 0, CLASSES.index("rotate_cw"), seed=0)
    c0, th0, th1 = p.obj.centre[0], p.obj.angle[0], p.obj.angle[1]
    assert th1 > th0
    # local point that is at (+1, 0) relative to the centre in image space at t=0
    ux, uy = p.obj.to_local(0, np.array([c0[0] + 5.0]), np.array([c0[1]]))
    x1, y1 = p.obj.to_image(1, ux, uy)
    assert y1[0] - p.obj.centre[1][1] > 0


def test_tracks_visible_inside_mask_and_occluded_invisible():
    n_occluded = n_visible = 0
    for cfg, p, r in _videos(n=32, distractor_prob=1.0):
        S = cfg.size
        for t in range(cfg.num_frames):
            pts = r.points[t]
            ix, iy = np.round(pts[:, 0]).astype(int), np.round(pts[:, 1]).astype(int)
            inb = (ix >= 0) & (ix < S) & (iy >= 0) & (iy < S)
            vis = r.visible[t]
            assert not (vis & ~inb).any()
            assert (r.mask[t, iy[vis], ix[vis]] == 1).all()
            # independent check of occlusion: is the distractor's shape over the point?
            from videossl.data.shards.render import shape_inside

            vx, vy = p.distractor.to_local(t, pts[:, 0].astype(np.float64), pts[:, 1].astype(np.float64))
            under = shape_inside(p.distractor.shape, vx, vy) & inb
            covered = inb & (r.mask[t, np.clip(iy, 0, S - 1), np.clip(ix, 0, S - 1)] == 2)
            # a point under the distractor (exactly, or at its pixel) is occluded, hence invisible
            assert (r.occluded[t][under | covered]).all()
            assert not (vis & (under | covered)).any()
            n_occluded += int(covered.sum())
            n_visible += int(vis.sum())
    assert n_occluded > 20 and n_visible > 1000  # the test saw both cases


def test_class_is_not_readable_from_one_frame_but_is_from_frame_pairs():
    """A tiny CNN on single frames stays near chance; on (frame, frame difference) it is far above."""
    torch.manual_seed(0)
    cfg = make_config(size=32, num_frames=8)
    data = [(render(sample_params(cfg, i, i % 8, seed=11)).frames, i % 8) for i in range(1100)]
    X = np.stack([d[0] for d in data])
    Y = torch.tensor([d[1] for d in data])
    Xtr, Ytr, Xte, Yte = X[:860], Y[:860], X[860:], Y[860:]

    def inputs(X, mode, rng):
        n, T = X.shape[:2]
        t = rng.integers(0, T - 3, size=n) if mode == "pair" else rng.integers(0, T, size=n)
        f = torch.tensor(X[np.arange(n), t]).permute(0, 3, 1, 2).float() / 255
        if mode == "single":
            return f
        g = torch.tensor(X[np.arange(n), t + 3]).permute(0, 3, 1, 2).float() / 255
        return torch.cat([f, g - f], 1)

    def accuracy(mode):
        rng = np.random.default_rng(0)
        net = torch.nn.Sequential(
            torch.nn.Conv2d(3 if mode == "single" else 6, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(), torch.nn.Linear(64, 8),
        )
        opt = torch.optim.Adam(net.parameters(), 2e-3)
        for _ in range(14):
            x = inputs(Xtr, mode, rng)
            perm = torch.randperm(len(Ytr))
            for b in range(0, len(perm), 64):
                idx = perm[b : b + 64]
                loss = F.cross_entropy(net(x[idx]), Ytr[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            return (net(inputs(Xte, mode, np.random.default_rng(1))).argmax(1) == Yte).float().mean().item()

    single, pair = accuracy("single"), accuracy("pair")
    chance = 1 / 8
    assert single < chance + 0.08, single
    assert pair > 2.4 * chance, pair


def _digest(out):
    m = load_manifest(out)
    h = hashlib.sha256()
    frames = []
    import av

    for split in m["splits"]:
        for path in split_shard_paths(out, split):
            for key, members in iter_tar_samples(path):
                for ext in ("json", "mask.npy", "flow.npz", "tracks.npz"):
                    h.update(key.encode() + ext.encode() + members[ext])
                with av.open(io.BytesIO(members["mp4"])) as c:
                    frames.append(np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]))
    return h.hexdigest(), frames


def test_same_seed_same_ground_truth_and_frames(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate(a, 12, seed=5, workers=1, progress=False, size=32, num_frames=6)
    generate(b, 12, seed=5, workers=2, progress=False, size=32, num_frames=6)
    generate(c, 12, seed=6, workers=1, progress=False, size=32, num_frames=6)
    da, fa = _digest(a)
    db, fb = _digest(b)
    dc, _ = _digest(c)
    assert da == db
    assert len(fa) == 12 and all((x == y).all() for x, y in zip(fa, fb, strict=True))
    assert da != dc


def test_shards_hold_mp4_and_ground_truth_with_manifest_counts(tmp_path):
    m = generate(tmp_path, 40, seed=0, workers=1, progress=False, size=32, num_frames=8)
    assert m["classes"] == list(CLASSES)
    assert sum(s["num_samples"] for s in m["splits"].values()) == 40
    assert m["splits"]["train"]["num_samples"] == 8 * 3  # 5 per class: 3 train / 1 val / 1 test
    import json

    path = split_shard_paths(tmp_path, "val")[0]
    key, members = next(iter_tar_samples(path))
    meta = json.loads(members["json"])
    assert meta["split"] == "val" and meta["caption"].startswith("a")
    assert set(meta["difficulty"]) >= {"speed_px_per_frame", "amplitude_px", "occlusion", "noise_std",
                                      "drift_px_per_frame"}
    assert load_npy(members["mask.npy"]).shape == (8, 32, 32)
    flow = load_npz(members["flow.npz"])
    assert flow["forward"].shape == flow["backward"].shape == (7, 32, 32, 2)
    tr = load_npz(members["tracks.npz"])
    assert tr["points"].shape[:1] == (8,) and tr["visible"].dtype == bool
    assert members["mp4"][4:8] == b"ftyp"


def test_hard_preset_is_harder():
    easy = make_config()
    hard = make_config("hard")
    assert hard.size >= 128 and hard.speed[0] > easy.speed[1] * 0.8 and hard.distractor_prob == 1.0
    assert hard.noise_std[0] > easy.noise_std[1]
    p = sample_params(replace(hard, size=64), 0, 0, seed=0)
    assert p.distractor is not None


def test_fast_preset_moves_more_per_frame_and_keeps_the_object_in_view():
    easy, fast = make_config(), make_config("fast")
    assert fast.size == easy.size and fast.speed[0] > easy.speed[1]
    for label in range(4):  # the translations: per-frame displacement of the centre, object kept in the frame
        pe, pf = sample_params(easy, 3, label, seed=0), sample_params(fast, 3, label, seed=0)
        step_e = np.abs(np.diff(pe.obj.centre, axis=0)).max()
        step_f = np.abs(np.diff(pf.obj.centre, axis=0)).max()
        assert step_f > step_e and step_f >= 1.8
        assert pf.obj.centre.min() >= 0 and pf.obj.centre.max() <= fast.size - 1


def test_tracks_option_sets_the_number_of_tracks_and_rejects_zero(tmp_path):
    from videossl.cli import main
    from videossl.errors import VideosslError

    assert main(["data", "synth", "--out", str(tmp_path), "--num-videos", "8", "--tracks", "20", "--size", "32",
                 "--frames", "4", "--workers", "1", "--no-progress"]) == 0
    _, members = next(iter_tar_samples(split_shard_paths(tmp_path, "train")[0]))
    tr = load_npz(members["tracks.npz"])
    assert tr["points"].shape == (4, 20, 2) and tr["visible"].shape == (4, 20)
    with pytest.raises(VideosslError, match="--tracks must be at least 1"):
        make_config(num_tracks=0)
