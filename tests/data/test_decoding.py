from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from videossl.data.decoding import DecodeError, auto_order, available_backends, measure_rss_growth, open_video
from videossl.errors import VideosslError

BACKENDS = [b for b in ("torchcodec", "decord", "pyav") if b in available_backends()]


def require_torchcodec() -> None:
    """torchcodec needs the system FFmpeg libraries: CI installs them (.ci/run) and must test it; elsewhere skip."""
    if "torchcodec" not in available_backends():
        if os.environ.get("CI"):
            pytest.fail("torchcodec does not load in CI: .ci/run installs it and the FFmpeg libraries")
        pytest.skip("torchcodec does not load here (pip install 'videossl[torchcodec]' and the FFmpeg libraries)")


def test_auto_prefers_torchcodec_then_decord_then_pyav():
    have = available_backends()
    assert "decord" in have and "pyav" in have
    with pytest.raises(VideosslError, match="unknown decoder backend"):
        open_video(b"x", "ffmpeg")
    assert auto_order("pyav")[0] == "pyav" and sorted(auto_order("pyav")) == sorted(have)
    require_torchcodec()
    assert have == ["torchcodec", "decord", "pyav"] and auto_order() == have


@pytest.mark.parametrize("backend", BACKENDS)
def test_metadata_and_frames_match_reference(backend, mp4_bytes, mp4_reference):
    with open_video(mp4_bytes, backend) as r:
        assert (r.num_frames, r.width, r.height) == (40, 64, 48)
        assert r.fps == pytest.approx(25.0)
        idx = [0, 7, 8, 9, 23, 39]  # keyframe boundaries (gop 8) and the last frame
        x = r.get_frames(idx)
    assert x.dtype == torch.uint8 and x.shape == (6, 48, 64, 3)
    mae = np.abs(x.numpy().astype(float) - mp4_reference[idx].astype(float)).mean()
    assert mae <= 1.0


def test_decord_and_pyav_agree_on_the_same_indices(mp4_bytes):
    idx = np.array([3, 17, 30, 31, 12])
    with open_video(mp4_bytes, "decord") as a, open_video(mp4_bytes, "pyav") as b:
        fa, fb = a.get_frames(idx).float(), b.get_frames(idx).float()
    assert (fa - fb).abs().mean().item() <= 1.0
    # frames really differ from each other (the index is not ignored)
    assert (fa[0] - fa[1]).abs().mean().item() > 20


@pytest.mark.parametrize("backend", BACKENDS)
def test_unsorted_and_repeated_indices(backend, mp4_bytes, mp4_reference):
    idx = [25, 2, 2, 39, 0, 25, 16]
    with open_video(mp4_bytes, backend) as r:
        x = r.get_frames(idx).numpy().astype(float)
        empty = r.get_frames([])
    assert x.shape[0] == len(idx)
    assert np.abs(x - mp4_reference[idx]).mean() <= 1.0
    assert np.array_equal(x[1], x[2]) and np.array_equal(x[0], x[5])
    assert empty.shape == (0, 48, 64, 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_out_of_range_and_closed(backend, mp4_bytes):
    r = open_video(mp4_bytes, backend)
    with pytest.raises(DecodeError, match="out of range: the video has 40 frames"):
        r.get_frames([0, 40])
    with pytest.raises(DecodeError, match="out of range"):
        r.get_frames([-1])
    r.close()
    with pytest.raises(DecodeError, match="closed"):
        r.get_frames([0])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "make",
    [
        lambda b: b"",
        lambda b: np.random.default_rng(0).bytes(4000),
        lambda b: b[: len(b) // 2],  # moov at the end: cut off
        lambda b: b[:100],
    ],
    ids=["empty", "garbage", "truncated-half", "truncated-header"],
)
def test_bad_bytes_raise_decode_error(backend, make, mp4_bytes):
    with pytest.raises(DecodeError):
        with open_video(make(mp4_bytes), backend) as r:
            r.get_frames(range(r.num_frames))


@pytest.mark.parametrize("backend", BACKENDS)
def test_truncated_faststart_file_raises_decode_error(backend, tmp_path, make_mp4):
    # moov in front: the container opens, the sample data is cut: must fail at open or get_frames
    data = make_mp4(32, 64, 48, path=tmp_path / "fs.mp4")
    assert data[4:8] == b"ftyp" and b"moov" in data[:2000]
    cut = data[: int(len(data) * 0.7)]
    with pytest.raises(DecodeError):
        with open_video(cut, backend, expected_frames=32) as r:
            r.get_frames(range(r.num_frames))


def test_expected_frames_far_off_is_truncation(mp4_bytes):
    with pytest.raises(DecodeError, match="metadata says 200"):
        open_video(mp4_bytes, "pyav", expected_frames=200)
    with open_video(mp4_bytes, "pyav", expected_frames=41) as r:  # small mismatch: tolerated
        assert r.num_frames == 40


def test_open_from_path(tmp_path, mp4_bytes):
    p = tmp_path / "v.mp4"
    p.write_bytes(mp4_bytes)
    with open_video(p) as r:
        assert r.get_frames([5]).shape == (1, 48, 64, 3)
    with pytest.raises(DecodeError, match="does not exist"):
        open_video(tmp_path / "missing.mp4")


def test_pyav_seek_only_decodes_from_the_keyframe(mp4_bytes, monkeypatch):
    # frame 33 lies in the GOP starting at 32: PyAV must seek there and decode <= 8 frames
    import av

    calls = {"n": 0}
    orig = av.packet.Packet.decode

    def counting(self):
        out = orig(self)
        calls["n"] += len(out)
        return out

    with open_video(mp4_bytes, "pyav") as r:
        monkeypatch.setattr(av.packet.Packet, "decode", counting)
        r.get_frames([33])
    assert 0 < calls["n"] <= 8


def test_measure_rss_growth_reports_numbers(mp4_bytes):
    out = measure_rss_growth(mp4_bytes, "pyav", iterations=5, warmup=1)
    assert set(out) == {"rss_start_mb", "rss_end_mb", "growth_mb", "per_iter_kb", "iterations"}
    assert out["rss_start_mb"] > 10 and out["iterations"] == 5


@pytest.mark.parametrize("width", [32, 48, 96])
def test_auto_decodes_widths_that_decord_pads(width, tmp_path):
    """decord2 (3.3/3.4) returns row-padded frames for some widths: ``auto`` must still give the true
    frames (equal to PyAV's), and an explicit ``decord`` must either be right or say what to use."""
    from tests.data._videos import make_video

    data = make_video(tmp_path / "v.mp4", num_frames=8, width=width, height=32).read_bytes()
    idx = [5, 0, 3]
    with open_video(data, "pyav") as r:
        ref = r.get_frames(idx)
    with open_video(data) as r:
        got = r.get_frames(idx)
        assert (r.width, r.height) == (width, 32)
    assert got.shape == (3, 32, width, 3) and torch.equal(got, ref)
    try:
        with open_video(data, "decord") as r:
            d = r.get_frames(idx)
        assert (d.float() - ref.float()).abs().mean() <= 1.0
    except DecodeError as e:
        assert "pyav" in str(e)


def test_frames_of_a_wrong_shape_are_a_decode_error(mp4_bytes):
    with open_video(mp4_bytes, "pyav") as r:
        r._decode_sorted = lambda uniq: np.zeros((len(uniq), 4, 4, 4), np.uint8)
        with pytest.raises(DecodeError, match=r"expected \(N, H, W, 3\)"):
            r.get_frames([0])


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    from tests.data.zoo import make_zoo

    return {c.name: c for c in make_zoo(tmp_path_factory.mktemp("zoo"))}


@pytest.mark.parametrize("name", ["h264_main_bframes.mp4", "h264_open_gop.mkv", "hevc.mp4", "hevc.mov", "vp9.webm"])
def test_torchcodec_frames_equal_a_sequential_pyav_decode(zoo, name):
    from tests.data.zoo import reference_decode

    require_torchcodec()
    clip = zoo[name]
    ref = reference_decode(clip.path)
    with open_video(clip.path.read_bytes(), "torchcodec") as r:
        assert r.backend == "torchcodec" and r.num_frames == len(ref)
        every = r.get_frames(np.arange(r.num_frames)).numpy()
        some = r.get_frames([len(ref) - 1, 0, len(ref) // 2]).numpy()  # random access, unsorted
    assert float(np.abs(every.astype(np.int16) - ref.astype(np.int16)).mean()) <= 1.0
    assert float(np.abs(some.astype(np.int16) - ref[[len(ref) - 1, 0, len(ref) // 2]].astype(np.int16)).mean()) <= 1.0


def test_auto_falls_back_when_a_backend_fails_on_the_frames_asked_for(zoo, monkeypatch):
    from videossl.data import decoding

    data = zoo["h264_main_bframes.mp4"].path.read_bytes()
    first = decoding.auto_order()[0]
    broken = decoding._READERS[first] if first != "decord" else decoding.DecordReader

    def fail(self, uniq):
        raise RuntimeError("simulated decoder failure")

    monkeypatch.setattr(broken, "_decode_sorted", fail)
    with open_video(data, "auto") as r:
        assert r.backend == first
        x = r.get_frames([0, 5])
        assert r.backend != first and x.shape[0] == 2  # the next backend of the chain read them
    monkeypatch.undo()
    with pytest.raises(DecodeError, match="no decoder reads this video"):
        open_video(b"\x00" * 4096, "auto")
