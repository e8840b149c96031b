from __future__ import annotations

import numpy as np
import pytest

from videossl.data.loader import sampling
from videossl.data.loader.sampling import (
    brave_pair,
    clip_offsets,
    frame_step,
    long_video_clip,
    looped_length,
    random_clip,
    uniform_clips,
    union_indices,
)
from videossl.errors import VideosslError


def test_random_clip_stride_and_range():
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(200):
        c = random_clip(100, 25.0, rng, frames=8, stride=3)
        assert c.indices.dtype == np.int64
        assert np.array_equal(np.diff(c.indices), np.full(7, 3))
        assert 0 <= c.indices[0] and c.indices[-1] <= 99  # span 22: start in 0..78
        assert not c.padded
        starts.add(int(c.start))
    assert min(starts) == 0 and max(starts) == 78  # both ends of the start range are reachable


def test_random_clip_exact_fit_and_short_video_padding():
    c = random_clip(22, 25.0, 0, frames=8, stride=3)  # span exactly 22: the only start is 0
    assert c.indices.tolist() == [0, 3, 6, 9, 12, 15, 18, 21] and not c.padded
    s = random_clip(10, 25.0, 0, frames=8, stride=2)  # needs 15 frames
    assert s.indices.tolist() == [0, 2, 4, 6, 8, 9, 9, 9] and s.padded and s.start == 0


def test_target_fps_conversion():
    assert frame_step(30, target_fps=15) == 2.0
    assert clip_offsets(5, frame_step(30, target_fps=15)).tolist() == [0, 2, 4, 6, 8]
    assert clip_offsets(6, frame_step(25, target_fps=10)).tolist() == [0, 2, 5, 7, 10, 12]  # step 2.5, floor
    c = random_clip(11, 25.0, 0, frames=5, target_fps=10)  # span 11 = whole video
    assert c.indices.tolist() == [0, 2, 5, 7, 10] and not c.padded
    with pytest.raises(VideosslError, match="fps is unknown"):
        random_clip(50, 0.0, 0, frames=4, target_fps=10)


def test_uniform_clips_evenly_spaced():
    clips = uniform_clips(100, 25.0, num_clips=3, frames=4, stride=2)  # span 7, last start 93
    assert [c.start for c in clips] == [0, 46, 93]  # round(linspace(0, 93, 3)) = 0, 46.5->46, 93
    assert clips[2].indices.tolist() == [93, 95, 97, 99]
    assert [c.start for c in uniform_clips(100, 25.0, 1, 4, 2)] == [46]  # one clip: centred
    short = uniform_clips(5, 25.0, 2, 4, 2)
    assert all(c.start == 0 and c.padded for c in short)
    assert short[0].indices.tolist() == [0, 2, 4, 4]


def test_brave_inside_random_narrow_within_broad():
    rng = np.random.default_rng(1)
    for _ in range(100):
        n, b = brave_pair(300, 25.0, rng, 16, 2, 64, 4, "inside_random")  # spans 31 and 253
        assert b.start <= n.start and n.start + 30 <= b.start + 252
        assert set(n.indices.tolist()) <= set(range(b.start, b.start + 253))
        assert np.array_equal(np.diff(n.indices), np.full(15, 2)) and np.array_equal(np.diff(b.indices), np.full(63, 4))
        assert not n.looped and not b.looped


def test_brave_aligned_start_and_independent():
    rng = np.random.default_rng(2)
    for _ in range(50):
        n, b = brave_pair(300, 25.0, rng, 16, 2, 64, 4, "aligned_start")
        assert n.start == b.start and n.indices[0] == b.indices[0]
        assert b.start <= 300 - 253
    starts = {brave_pair(300, 25.0, rng, 16, 2, 64, 4, "independent")[0].start for _ in range(200)}
    assert max(starts) > 300 - 253  # the narrow start is not confined to the broad's range
    with pytest.raises(VideosslError, match="unknown placement"):
        brave_pair(300, 25.0, rng, placement="synced")
    with pytest.raises(VideosslError, match="narrow span"):
        brave_pair(300, 25.0, rng, 16, 8, 8, 2, "inside_random")


def test_brave_loops_short_videos_whole():
    # 100 frames, broad span 253: the sequence is repeated 3x (length 300)
    assert looped_length(100, 253) == 300
    rng = np.random.default_rng(3)
    saw_loop = False
    for _ in range(50):
        n, b = brave_pair(100, 25.0, rng, 16, 2, 64, 4, "inside_random")
        assert 0 <= b.start <= 300 - 253
        virt = b.start + 4 * np.arange(64)
        assert np.array_equal(b.indices, virt % 100)  # looped, not clamped to the last frame
        assert b.looped and not b.padded
        assert np.all(b.indices < 100) and np.all(n.indices < 100)
        saw_loop |= bool(np.any(np.diff(b.indices) < 0))
    assert saw_loop


def test_long_video_mask_and_padding():
    c = long_video_clip(100, 30.0, target_fps=1.0, max_frames=8)  # 4 frames at 0, 30, 60, 90
    assert c.indices.tolist() == [0, 30, 60, 90, 90, 90, 90, 90]
    assert c.valid.tolist() == [True] * 4 + [False] * 4 and c.padded
    full = long_video_clip(1000, 30.0, 1.0, 8)
    assert full.indices.tolist() == [0, 30, 60, 90, 120, 150, 180, 210] and full.valid.all() and not full.padded
    r = long_video_clip(1000, 30.0, 1.0, 8, rng=np.random.default_rng(0))
    assert np.array_equal(np.diff(r.indices), np.full(7, 30)) and r.indices[-1] <= 999


def test_union_indices_positions_cut_each_view():
    a = np.array([5, 3, 3, 9])
    b = np.array([9, 1])
    union, pos = union_indices([a, b])
    assert union.tolist() == [1, 3, 5, 9]
    assert union[pos[0]].tolist() == a.tolist() and union[pos[1]].tolist() == b.tolist()
    assert pos[0].tolist() == [2, 1, 1, 3]


def test_invalid_inputs():
    with pytest.raises(VideosslError, match="0 frames"):
        random_clip(0, 25.0, 0, 4)
    with pytest.raises(VideosslError, match="stride"):
        random_clip(10, 25.0, 0, 4, stride=0)


def test_retime_moves_a_clip_of_a_vfr_video_to_the_frames_nearest_its_times():
    # frame durations alternate 20 ms / 60 ms (average 25 fps): 0, .02, .08, .10, .16, .18, .24, ...
    times = np.cumsum([0.0] + [0.02, 0.06] * 12)[:24]
    clip = sampling.Clip(np.arange(4) * 3, 0)  # every 3rd index at 25 fps = every 120 ms
    moved = sampling.retime(clip, times, 25.0)
    assert moved.indices.tolist() == [0, 3, 6, 9]  # times 0, .10, .24, .34: nearest to 0, .12, .24, .36
    fast = sampling.retime(sampling.Clip(np.arange(5), 0), times, 50.0)  # every 20 ms
    assert fast.indices.tolist() == [0, 1, 1, 2, 2]  # .00 .02 .02(.04) .08(.06) .08
    cfr = np.arange(24) / 25.0
    assert sampling.retime(sampling.Clip(np.array([0, 5, 23]), 0), cfr, 25.0).indices.tolist() == [0, 5, 23]


def test_long_training_view_from_the_start_when_asked():
    import numpy as np

    from videossl.data.loader.sampling import sample_views
    from videossl.data.loader.views import ViewSpec

    rng = np.random.default_rng(0)
    fixed = ViewSpec(name="clip", sampler="long", frames=16, target_fps=1.0, size=32, random_start=False)
    free = ViewSpec(name="clip", sampler="long", frames=16, target_fps=1.0, size=32)
    starts = [sample_views([fixed], 200, 1.0, rng)[0][1].start for _ in range(20)]
    assert starts == [0] * 20
    assert len({sample_views([free], 200, 1.0, rng)[0][1].start for _ in range(20)}) > 5
