"""TAPNextMethod's query sampling: one query per track at a random visible frame, ``first_query_prob`` at the
track's first visible frame (TAP-Vid's `first` mode), ``queries_per_track`` copies of every track."""

import pytest
import torch

from videossl.errors import VideosslError
from videossl.methods.tapnext import TAPNextMethod
from videossl.models.tapnext import TAPNext


def _method(**kw):
    torch.manual_seed(0)
    return TAPNextMethod(TAPNext(img_size=32, patch=8, width=32, depth=1, heads=1, isolate_queries=True), **kw)


def _tracks(B=3, T=10, N=6):
    torch.manual_seed(2)
    pts = torch.rand(B, T, N, 2) * 31
    vis = torch.rand(B, T, N) > 0.4
    vis[0, :, 0] = False  # a track never visible in the clip
    vis[1, :, 1] = False
    vis[1, 7, 1] = True  # visible on one late frame only
    return pts, vis


def _first_visible(vis):
    return torch.where(vis, -torch.arange(vis.shape[1])[None, :, None].float(), torch.tensor(-1e9)).argmax(1)


def test_first_query_prob_one_queries_every_track_at_its_first_visible_frame():
    pts, vis = _tracks()
    q, has = _method(first_query_prob=1.0).sample_queries(pts, vis)
    t = q[..., 0].long()
    assert torch.equal(has, vis.any(1)) and not has[0, 0]
    assert torch.equal(t[has], _first_visible(vis)[has]) and t[1, 1] == 7
    b, n = torch.nonzero(has, as_tuple=True)
    assert vis[b, t[b, n], n].all()  # the query frame shows the point
    assert torch.equal(q[b, n, 2], pts[b, t[b, n], n, 0]) and torch.equal(q[b, n, 1], pts[b, t[b, n], n, 1])  # (t, y, x)


def test_default_queries_are_random_visible_frames():
    pts, vis = _tracks(B=8, T=12, N=8)
    q, has = _method().sample_queries(pts, vis)
    t = q[..., 0].long()
    b, n = torch.nonzero(has, as_tuple=True)
    assert vis[b, t[b, n], n].all()
    assert (t[has] != _first_visible(vis)[has]).any()  # not always the first visible frame


def test_queries_per_track_repeats_the_tracks_along_the_query_axis():
    m = _method(queries_per_track=3)
    pts, vis = _tracks(B=2, T=8, N=4)
    batch = {"tracks": {"points": pts, "visible": vis}, "indices": [torch.arange(8).expand(2, 8)],
             "views": [torch.rand(2, 8, 3, 32, 32)], "view_names": ["clip"]}
    clip, p, v = m.targets(batch)
    assert clip.shape == (2, 3, 8, 32, 32)
    assert p.shape == (2, 8, 12, 2) and torch.equal(p[:, :, 4:8], pts) and torch.equal(v[:, :, 8:], vis)
    q, has = m.sample_queries(p, v)
    assert q.shape == (2, 12, 3) and torch.equal(has[:, :4], has[:, 8:])


@pytest.mark.parametrize("kw", [{"queries_per_track": 0}, {"first_query_prob": 1.5}])
def test_bad_query_options_are_one_line(kw):
    with pytest.raises(VideosslError):
        _method(**kw)
