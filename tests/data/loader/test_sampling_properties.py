"""Property-based tests (hypothesis) of the clip samplers and the decoder's index logic.

For any video length, frame rate, stride / target rate and view size: every index is in range, each
sampler returns the documented number of frames, and "decode once, cut many views" gives back exactly
each view's frames.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from videossl.data.decoding import _check_indices
from videossl.data.loader import sampling
from videossl.errors import VideosslError

lengths = st.integers(min_value=1, max_value=600)
fps_values = st.one_of(st.none(), st.floats(min_value=1.0, max_value=120.0))
frames_st = st.integers(min_value=1, max_value=64)
strides = st.integers(min_value=1, max_value=8)
targets = st.one_of(st.none(), st.floats(min_value=0.5, max_value=60.0))
seeds = st.integers(min_value=0, max_value=2**31 - 1)

SETTINGS = settings(max_examples=150, deadline=None)


def in_range(clip: sampling.Clip, n: int) -> bool:
    idx = np.asarray(clip.indices)
    return idx.size > 0 and int(idx.min()) >= 0 and int(idx.max()) < n


@SETTINGS
@given(n=lengths, fps=fps_values, frames=frames_st, stride=strides, target=targets, seed=seeds)
def test_random_clip_in_range_with_the_asked_frames(n, fps, frames, stride, target, seed):
    target = target if fps else None  # a target rate needs the video's rate
    c = sampling.random_clip(n, fps, np.random.default_rng(seed), frames, stride, target)
    assert len(c) == frames and in_range(c, n)
    assert (np.diff(c.indices) >= 0).all()  # time never runs backwards inside a clip


@SETTINGS
@given(n=lengths, fps=fps_values, k=st.integers(1, 12), frames=frames_st, stride=strides)
def test_uniform_clips_count_range_and_order(n, fps, k, frames, stride):
    clips = sampling.uniform_clips(n, fps, k, frames, stride)
    assert len(clips) == k and all(len(c) == frames and in_range(c, n) for c in clips)
    starts = [int(c.indices[0]) for c in clips]
    assert starts == sorted(starts)  # evenly spaced from the start to the end


@SETTINGS
@given(n=lengths, fps=st.floats(min_value=1.0, max_value=60.0), target=st.floats(min_value=0.2, max_value=30.0),
       max_frames=st.integers(1, 256), seed=st.one_of(st.none(), seeds))
def test_long_video_clip_at_most_max_frames_and_a_valid_mask(n, fps, target, max_frames, seed):
    rng = None if seed is None else np.random.default_rng(seed)
    c = sampling.long_video_clip(n, fps, target, max_frames, rng)
    assert len(c) == max_frames and in_range(c, n)
    assert c.valid is not None and c.valid.shape == (max_frames,) and c.valid[0]
    assert not c.valid[np.argmin(c.valid):].any() or c.valid.all()  # real frames first, then padding


@SETTINGS
@given(n=lengths, fps=fps_values, nf=st.integers(1, 32), ns=strides, bf=st.integers(1, 64), bs=strides,
       placement=st.sampled_from(sampling.PLACEMENTS), seed=seeds)
def test_brave_pair_in_range_with_both_sizes(n, fps, nf, ns, bf, bs, placement, seed):
    n_span, b_span = (nf - 1) * ns + 1, (bf - 1) * bs + 1
    if placement == "inside_random" and n_span > b_span:  # the narrow window cannot sit inside the broad one
        with pytest.raises(VideosslError, match="inside_random needs the narrow span"):
            sampling.brave_pair(n, fps, np.random.default_rng(seed), nf, ns, bf, bs, placement)
        return
    narrow, broad = sampling.brave_pair(n, fps, np.random.default_rng(seed), nf, ns, bf, bs, placement)
    assert len(narrow) == nf and len(broad) == bf and in_range(narrow, n) and in_range(broad, n)


@SETTINGS
@given(n=lengths, data=st.data())
def test_union_indices_cuts_every_view_back(n, data):
    views = data.draw(st.lists(st.lists(st.integers(0, n - 1), min_size=1, max_size=40), min_size=1, max_size=5))
    union, positions = sampling.union_indices([np.array(v) for v in views])
    assert (np.diff(union) > 0).all()  # sorted, each frame once: decoded once
    for v, pos in zip(views, positions, strict=True):
        assert union[pos].tolist() == v


@SETTINGS
@given(n=st.integers(1, 500), data=st.data())
def test_decoder_index_logic_unique_sorted_and_inverse(n, data):
    idx = data.draw(st.lists(st.integers(0, n - 1), min_size=0, max_size=50))
    uniq, inverse = _check_indices(idx, n)
    assert (np.diff(uniq) > 0).all() and uniq[inverse].tolist() == idx
