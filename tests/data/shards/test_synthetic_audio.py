"""The synthetic set's sound (``--audio``): a real AAC stream that follows the object, whose class is heard
over the clip but not in one frame-long snippet, and frames that are those of the set without sound."""

from __future__ import annotations

import io
import json

import av
import numpy as np
import pytest

from videossl.data.shards.format import iter_tar_samples, load_manifest, split_shard_paths
from videossl.data.shards.synthetic import CLASSES, generate, make_config, make_sample, sample_params
from videossl.data.shards.synthetic_audio import (
    MAPPING_VERSION,
    AudioConfig,
    frame_state,
    make_audio_config,
    sample_audio,
    sample_state,
)
from videossl.data.shards.synthetic_long import make_long_sample
from videossl.errors import VideosslError

RATE = 16000
CFG = dict(size=32, num_frames=16)  # 1.33 s at 12 fps


# ----------------------------------------------------------------------------- measuring the sound (numpy only)
def _decode(mp4: bytes) -> tuple[np.ndarray, av.audio.stream.AudioStream]:
    with av.open(io.BytesIO(mp4)) as c:
        s = c.streams.audio[0]
        x = np.concatenate([f.to_ndarray() for f in c.decode(s)], axis=1)
        return x, (s.rate, s.channels, s.codec_context.name)


def _peak(freqs, power, lo, hi):
    """Frequency of the strongest bin in [lo, hi], refined by a parabola through the log power."""
    i0, i1 = np.searchsorted(freqs, [lo, hi])
    k = i0 + int(np.argmax(power[i0:i1]))
    a, b, c = np.log(power[k - 1 : k + 2] + 1e-20)
    den = a - 2 * b + c
    return freqs[k] + (0.5 * (a - c) / den if den else 0.0) * (freqs[1] - freqs[0])


def _measure(seg: np.ndarray, rate: int) -> dict[str, float]:
    """Pan, level, pitch, whistle and the partials' pattern (c, s) of one stereo window."""
    L, R = seg.astype(np.float64)
    w = np.hanning(seg.shape[1])
    power = np.abs(np.fft.rfft(L * w, 4096)) ** 2 + np.abs(np.fft.rfft(R * w, 4096)) ** 2  # pan-free (equal power)
    freqs = np.fft.rfftfreq(4096, 1 / rate)
    f0 = _peak(freqs, power, 70, 900)
    parts = []
    for k in range(2, 6):
        i0, i1 = np.searchsorted(freqs, [k * f0 * 0.97, k * f0 * 1.03])
        parts.append(power[i0 : i1 + 1].max())
    p2, p3, p4, p5 = parts
    total = sum(parts)
    return {"pan": 0.5 * np.log(np.mean(R**2) / np.mean(L**2)), "level": 10 * np.log10(np.mean(L**2 + R**2)),
            "pitch": np.log2(f0), "whistle": np.log2(_peak(freqs, power, 3450, 7600)),
            "c": (p2 - p4) / total, "s": (p3 - p5) / total}


def _tracks(x: np.ndarray, rate: int, win: float = 0.1, hop: float = 0.1):
    n, h = int(win * rate), int(hop * rate)
    rows = [_measure(x[:, i : i + n], rate) for i in range(0, x.shape[1] - n + 1, h)]
    return (np.arange(len(rows)) * h + n / 2) / rate, {k: np.array([r[k] for r in rows]) for k in rows[0]}


def _slope(t, v):
    t = t - t.mean()
    return float((t * (v - v.mean())).sum() / (t * t).sum())


def clip_features(x: np.ndarray, rate: int) -> np.ndarray:
    """Over the whole clip: slopes of pan, pitch, level and whistle, and how the (c, s) pattern turns."""
    t, f = _tracks(x, rate)
    vc, vs = f["c"] - f["c"].mean(), f["s"] - f["s"].mean()
    cross = vc[:-1] * vs[1:] - vs[:-1] * vc[1:]  # > 0: counterclockwise = theta grows = clockwise on screen
    turn = cross.sum() / (np.hypot(vc[:-1], vs[:-1]) * np.hypot(vc[1:], vs[1:])).sum()
    return np.array([_slope(t, f["pan"]), _slope(t, f["pitch"]), _slope(t, f["level"]), _slope(t, f["whistle"]), turn])


def snippet_features(x: np.ndarray, rate: int, fps: float, rng: np.random.Generator) -> np.ndarray:
    """The instantaneous values in one frame-long snippet at a random time."""
    n = int(rate / fps)
    i = int(rng.integers(0, x.shape[1] - n + 1))
    return np.array(list(_measure(x[:, i : i + n], rate).values()))


def _spearman(a, b):
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def _centroids(X, y):
    mu, sd = X.mean(0), X.std(0) + 1e-12
    classes = np.unique(y)
    return mu, sd, classes, np.stack([((X[y == c] - mu) / sd).mean(0) for c in classes])


def _predict(model, X):
    mu, sd, classes, cent = model
    return classes[np.argmin(((((X - mu) / sd)[:, None] - cent[None]) ** 2).sum(-1), 1)]


def cv_accuracy(X, y, folds=8):
    """Nearest-centroid (standardised features) accuracy, ``folds``-fold cross-validated."""
    idx = np.random.default_rng(0).permutation(len(y))
    correct = 0
    for f in range(folds):
        te = idx[f::folds]
        tr = np.setdiff1d(idx, te)
        correct += int((_predict(_centroids(X[tr], y[tr]), X[te]) == y[te]).sum())
    return correct / len(y)


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def av_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_av")
    generate(out, 64, seed=4, progress=False, audio=True, **CFG)
    return out


def _samples(root):
    for split in load_manifest(root)["splits"]:
        for path in split_shard_paths(root, split):
            yield from iter_tar_samples(path)


# ----------------------------------------------------------------------------- tests
def test_mp4_holds_an_aac_stereo_stream_as_long_as_the_video(av_set):
    m = load_manifest(av_set)
    assert m["audio"] == {"rate": RATE, "channels": 2, "codec": "aac", "bit_rate": 64000, "mapping": MAPPING_VERSION}
    assert m["params"]["audio_rate"] == RATE and "mp4 audio" in m["ground_truth"]
    key, members = next(_samples(av_set))
    meta = json.loads(members["json"])
    assert meta["audio"]["rate"] == RATE and meta["audio"]["channels"] == 2 and meta["audio"]["mapping"] == MAPPING_VERSION
    x, (rate, channels, codec) = _decode(members["mp4"])
    assert (rate, channels, codec) == (RATE, 2, "aac")
    expected = round(meta["duration"] * RATE)
    assert abs(x.shape[1] - expected) < 1024, (x.shape, expected)  # within one AAC frame of the video's duration
    with av.open(io.BytesIO(members["mp4"])) as c:
        assert len(list(c.decode(video=0))) == meta["num_frames"]
    # the decoded sound is the documented track, rebuilt from the json's source (seed, index)
    _, seed, index = meta["source"].split(":")
    p = sample_params(make_config(**CFG), int(index), meta["label"], int(seed))
    ref, timbre = sample_audio(p, int(seed), AudioConfig())
    assert meta["audio"]["base_hz"] == round(timbre.base_hz, 4)
    err = x[:, : ref.shape[1]] - ref
    assert 10 * np.log10((ref**2).sum() / (err**2).sum()) > 10  # SNR of the AAC round trip, dB


def test_pan_and_whistle_follow_x_pitch_follows_y_loudness_follows_size():
    cfg, acfg = make_config(**CFG), AudioConfig()
    for name, key, dim, sign in (("translate_right", "pan", 0, 1), ("translate_left", "whistle", 0, 1),
                                 ("translate_up", "pitch", 1, -1), ("zoom_out", "level", 3, 1)):
        _, _, _, members = make_sample(CLASSES.index(name), cfg, seed=1, num_videos=8, audio=acfg)
        p = sample_params(cfg, CLASSES.index(name), CLASSES.index(name), seed=1)
        x, _ = _decode(members["mp4"])
        t, f = _tracks(x[:, : round(16 / 12 * RATE)], RATE)
        truth = sample_state(frame_state(p), cfg.fps, RATE, x.shape[1])[(t * RATE).astype(int), dim]
        assert sign * _spearman(f[key], truth) > 0.9, (name, key, _spearman(f[key], truth))
    # pitch in Hz: the fundamental B * 2 ** (0.75 - 1.5 y_n)
    p = sample_params(cfg, 2, CLASSES.index("translate_down"), seed=1)
    ref, timbre = sample_audio(p, 1, acfg)
    t, f = _tracks(ref, RATE)
    y_n = sample_state(frame_state(p), cfg.fps, RATE, ref.shape[1])[(t * RATE).astype(int), 1]
    np.testing.assert_allclose(2 ** f["pitch"], timbre.base_hz * 2 ** (0.75 - 1.5 * y_n), rtol=0.01)


def test_absolute_sound_says_little_about_the_absolute_state():
    """Mapping v2's per-video offsets: across videos, one snippet's pan / pitch / level / whistle is only weakly
    rank-correlated with the object's x / y / size at that instant (v1: pan ~ x was ~1), and its heard
    orientation is unrelated to the seen one, while within a clip
    they follow it (the test above), so an audio-visual objective cannot agree on the state alone."""
    cfg, acfg = make_config(**CFG), AudioConfig()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(96):
        p = sample_params(cfg, i, i % 8, seed=3)
        x, _ = sample_audio(p, 3, acfg)
        n = int(RATE / cfg.fps)
        j = int(rng.integers(0, x.shape[1] - n + 1))
        m = _measure(x[:, j : j + n], RATE)
        x_n, y_n, theta, lam = sample_state(frame_state(p), cfg.fps, RATE, x.shape[1])[j + n // 2]
        heard = np.arctan2(m["s"], m["c"])  # the partials' pattern's angle
        rows.append((m["pan"], m["whistle"], x_n, m["pitch"], y_n, m["level"], lam, heard - theta))
    pan, whistle, x_n, pitch, y_n, level, lam, gap = np.array(rows).T
    r = {"pan~x": _spearman(pan, x_n), "whistle~x": _spearman(whistle, x_n), "pitch~-y": _spearman(pitch, -y_n),
         "level~size": _spearman(level, lam)}
    assert all(abs(v) < 0.6 for v in r.values()), r
    # the heard orientation minus the seen one is spread round the circle (v1: concentrated near 0)
    assert abs(np.exp(1j * gap).mean()) < 0.3, abs(np.exp(1j * gap).mean())
    assert all(v > 0.1 for v in r.values()), r  # still the mapping's sign: the offsets blur it, they do not flip it


def test_class_is_heard_over_the_clip_and_reversal_hears_its_pair(av_set):
    X, y, Xr = [], [], []
    for _, members in _samples(av_set):
        x, _ = _decode(members["mp4"])
        x = x[:, : round(16 / 12 * RATE)]
        X.append(clip_features(x, RATE))
        Xr.append(clip_features(x[:, ::-1], RATE))
        y.append(json.loads(members["json"])["label"])
    X, y, Xr = np.array(X), np.array(y), np.array(Xr)
    assert len(y) == 64 and np.bincount(y).tolist() == [8] * 8
    acc = cv_accuracy(X, y)
    assert acc > 0.7, acc  # chance 0.125
    # time reversal: a reversed clip of a class sounds like its pair (left <-> right, cw <-> ccw, ...)
    pair = np.array([1, 0, 3, 2, 5, 4, 7, 6])
    reversed_as_pair = (_predict(_centroids(X, y), Xr) == pair[y]).mean()
    assert reversed_as_pair > 0.7, reversed_as_pair


def test_one_frame_long_snippet_does_not_tell_a_pair_apart():
    """Within each time-reversed pair one snippet is at chance, while the same videos' whole clips are not."""
    cfg, acfg = make_config(**CFG), AudioConfig()
    rng = np.random.default_rng(0)
    snippet_acc, clip_acc, every_snippet, every_label = {}, {}, [], []
    for a in (0, 2, 4, 6):  # left/right, up/down, cw/ccw, in/out
        S, C, y = [], [], []
        for i in range(64):
            label = a + i % 2
            x, _ = sample_audio(sample_params(cfg, i, label, seed=2), 2, acfg)
            S.append(snippet_features(x, RATE, cfg.fps, rng))
            if i < 32:
                C.append(clip_features(x, RATE))
            y.append(label)
        y = np.array(y)
        snippet_acc[CLASSES[a]] = cv_accuracy(np.array(S), y)
        clip_acc[CLASSES[a]] = cv_accuracy(np.array(C), y[:32])
        every_snippet += S
        every_label += y.tolist()
    assert snippet_acc["translate_left"] < 0.65, snippet_acc
    assert max(snippet_acc.values()) < 0.7 and np.mean(list(snippet_acc.values())) < 0.6, snippet_acc
    assert min(clip_acc.values()) > 0.9, clip_acc
    assert cv_accuracy(np.array(every_snippet), np.array(every_label)) < 0.25  # nor the 8 classes (chance 0.125)


def test_frames_and_ground_truth_with_audio_are_those_without(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    generate(a, 8, seed=7, progress=False, size=32, num_frames=8)
    generate(b, 8, seed=7, progress=False, size=32, num_frames=8, audio=True)
    assert "audio" not in load_manifest(a) and "audio_rate" not in load_manifest(a)["params"]
    for (ka, ma), (kb, mb) in zip(_samples(a), _samples(b), strict=True):
        assert ka == kb
        for ext in ("mask.npy", "flow.npz", "tracks.npz"):
            assert ma[ext] == mb[ext]
        meta_a, meta_b = json.loads(ma["json"]), json.loads(mb["json"])
        assert "audio" not in meta_a and {k: v for k, v in meta_b.items() if k != "audio"} == meta_a
        with av.open(io.BytesIO(ma["mp4"])) as ca, av.open(io.BytesIO(mb["mp4"])) as cb:
            assert len(ca.streams.audio) == 0 and len(cb.streams.audio) == 1
            pa = [bytes(p) for p in ca.demux(video=0) if p.size]
            pb = [bytes(p) for p in cb.demux(video=0) if p.size]
            assert pa == pb  # the same H.264 packets, hence the same frames
        with av.open(io.BytesIO(ma["mp4"])) as ca, av.open(io.BytesIO(mb["mp4"])) as cb:
            fa = np.stack([f.to_ndarray(format="rgb24") for f in ca.decode(video=0)])
            fb = np.stack([f.to_ndarray(format="rgb24") for f in cb.decode(video=0)])
            assert fa.shape == (8, 32, 32, 3) and (fa == fb).all()


def test_audio_is_reproducible_and_options_are_checked(tmp_path):
    cfg = make_config(**CFG)
    one = make_sample(5, cfg, seed=3, num_videos=8, audio=AudioConfig(rate=22050))[3]["mp4"]
    two = make_sample(5, cfg, seed=3, num_videos=8, audio=AudioConfig(rate=22050))[3]["mp4"]
    assert one == two and _decode(one)[1][0] == 22050
    with pytest.raises(VideosslError, match="--audio-rate must be one of"):
        make_audio_config(True, 8000)
    with pytest.raises(VideosslError, match="needs --audio"):
        generate(tmp_path / "x", 2, progress=False, audio_rate=16000)


def test_long_preset_sounds_each_event_and_holds_it_over_the_gap():
    cfg = make_config("long", size=32, fps=8.0)  # 128-256 frames in 16-32 s (the preset's 1 fps: minutes of sound)
    _, _, _, members = make_long_sample(1, cfg, seed=0, num_videos=8, audio=AudioConfig())
    meta = json.loads(members["json"])
    x, (rate, channels, _) = _decode(members["mp4"])
    assert (rate, channels) == (RATE, 2) and abs(x.shape[1] - meta["duration"] * RATE) < 1024
    ends = [ev["start"] for ev in meta["events"][1:]] + [meta["num_frames"]]
    gaps = 0
    for e, (ev, next_start) in enumerate(zip(meta["events"], ends, strict=True)):
        y_n = frame_state(sample_params(cfg, 1 * 16 + e, ev["label"], seed=1))[:, 1]
        checks = [(ev["start"] + 8, y_n[8])]  # frame 8 of the event (its state is at the frame's centre)
        if next_start - ev["end"] >= 2:  # and the still gap after it: the last frame's state, held
            checks.append((ev["end"] + 1, y_n[-1]))
            gaps += 1
        for frame, y in checks:
            i = int((frame + 0.5) / cfg.fps * RATE) - 400  # a 50 ms window centred on the frame's centre
            f0 = 2 ** _measure(x[:, i : i + 800], RATE)["pitch"]
            assert f0 == pytest.approx(ev["audio"]["base_hz"] * 2 ** (0.75 - 1.5 * y), rel=0.01), (e, frame)
    assert gaps >= 1
