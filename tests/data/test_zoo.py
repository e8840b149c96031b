"""The decoder zoo's generator itself (tests/data/zoo.py), not the project's decoders."""

from __future__ import annotations

import hashlib

import av
import numpy as np
import pytest

from tests.data.zoo import make_zoo, reference_decode

SIZE = (64, 48)
FRAMES = 24
# size each clip is meant to have when it differs from SIZE
SIZES = {"av1.mkv": (64, 64), "odd_size.mp4": (50, 38)}
# clips every PyAV build with libx264 + aac (which the project needs anyway) must produce
CORE = {
    "h264_baseline.mp4", "h264_main_bframes.mp4", "h264_high_longgop.mp4", "h264_open_gop.mkv", "audio_first.mp4",
    "two_video_streams.mkv", "rotated.mp4", "vfr.mkv", "odd_size.mp4", "one_frame.mp4", "yuv444.mp4",
    "truncated.mp4", "garbage.mp4", "mpeg4_part2.avi", "mjpeg.avi",
}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    skipped: list = []
    clips = make_zoo(tmp_path_factory.mktemp("zoo"), size=SIZE, frames=FRAMES, skipped=skipped)
    return {c.name: c for c in clips}, skipped


def test_core_clips_present_and_files_exist(zoo):
    clips, skipped = zoo
    assert CORE <= set(clips), (set(CORE) - set(clips), skipped)
    assert any(n.startswith("pts_eq_dts_bframes.") for n in clips), skipped
    for c in clips.values():
        assert c.path.is_file() and c.path.stat().st_size > 0, c.name
        assert c.path.name == c.name
        assert c.expect in ("readable", "partial", "unreadable"), c.name
    # nothing is skipped silently: every skip names a missing encoder or a failure
    for name, why in skipped:
        assert name not in clips and why, name


def test_reference_decode_matches_recorded_frames(zoo):
    clips, _ = zoo
    for c in clips.values():
        if c.expect == "unreadable":
            continue
        arr = reference_decode(c.path)
        w, h = SIZES.get(c.name, SIZE)
        assert arr.dtype == np.uint8, c.name
        assert arr.shape == (c.frames, h, w, 3), (c.name, arr.shape)
        assert (c.width, c.height) == (w, h), c.name
        if c.expect == "readable" and c.name != "one_frame.mp4" and not c.name.startswith("pts_eq_dts"):
            assert c.frames == FRAMES, c.name
        # per-frame change: consecutive frames differ (frame order matters)
        if c.frames > 1:
            assert (np.abs(np.diff(arr.astype(np.int16), axis=0)).reshape(c.frames - 1, -1).mean(1) > 0.5).all(), c.name


def test_special_clips(zoo):
    clips, _ = zoo
    assert clips["one_frame.mp4"].frames == 1
    t = clips["truncated.mp4"]
    assert t.expect == "partial" and 0 < t.frames < FRAMES
    with av.open(str(clips["audio_first.mp4"].path)) as c:
        assert c.streams[0].type == "audio" and c.streams[1].type == "video"
    with av.open(str(clips["two_video_streams.mkv"].path)) as c:
        assert len(c.streams.video) == 2
        first = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    with av.open(str(clips["two_video_streams.mkv"].path)) as c:
        second = [f.to_ndarray(format="rgb24") for f in c.decode(video=1)]
    assert len(first) == len(second) == FRAMES
    assert np.abs(np.stack(first).astype(int) - np.stack(second)).mean() > 5  # different content
    np.testing.assert_array_equal(np.stack(first), reference_decode(clips["two_video_streams.mkv"].path))
    with av.open(str(clips["rotated.mp4"].path)) as c:
        assert next(c.decode(video=0)).rotation in (90, -90, 270)
    with av.open(str(clips["vfr.mkv"].path)) as c:
        pts = [f.pts for f in c.decode(video=0)]
    steps = set(np.diff(sorted(pts)).tolist())
    assert steps == {20, 60}, steps
    p = next(n for n in clips if n.startswith("pts_eq_dts_bframes."))
    with av.open(str(clips[p].path)) as c:
        packets = [pk for pk in c.demux(video=0) if pk.size]
    assert packets and all(pk.pts == pk.dts for pk in packets)


def test_garbage_raises(zoo):
    clips, _ = zoo
    g = clips["garbage.mp4"]
    assert g.expect == "unreadable" and g.frames == 0
    with pytest.raises((av.error.FFmpegError, ValueError)):
        reference_decode(g.path)


def test_deterministic(zoo, tmp_path):
    clips, _ = zoo
    again = {c.name: c for c in make_zoo(tmp_path, size=SIZE, frames=FRAMES)}
    assert set(again) == set(clips)
    for name, c in clips.items():
        assert hashlib.sha256(c.path.read_bytes()).digest() == hashlib.sha256(again[name].path.read_bytes()).digest(), name
        assert again[name].frames == c.frames, name
