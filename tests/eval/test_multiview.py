"""Multi-view test features through extract_features: every test video gets exactly K clips x C crops
rows, grouped by video id (not by batch position), and the per-video aggregation matches a hand
computation. Also: augmented train passes give passes x views rows per video."""

from __future__ import annotations

import pytest
import torch

from videossl.data.loader import ViewSpec
from videossl.errors import VideosslError
from videossl.eval.features import extract_features
from videossl.eval.probe import LinearProbe, evaluate_probe
from videossl.eval.scores import aggregate_views

try:
    from .conftest import ChannelMean
except ImportError:  # tests/eval is not a package
    from conftest import ChannelMean

K, C = 2, 3
VIEW = ViewSpec(name="clip", sampler="uniform", frames=4, stride=1, size=20, resize=28, train=False,
                num_clips=K, crops=C)


@pytest.fixture(scope="module")
def feats(synth48):
    enc = ChannelMean()
    small = extract_features(enc, str(synth48), "test", [VIEW], batch_size=3, progress=False)  # pads duplicates
    whole = extract_features(enc, str(synth48), "test", [VIEW], batch_size=8, progress=False)
    return small, whole


def test_every_video_gets_k_times_c_views(feats, synth48):
    import json

    fs, _ = feats
    manifest = json.loads((synth48 / "manifest.json").read_text())
    assert fs.views_per_video == K * C and fs.num_videos == manifest["splits"]["test"]["num_samples"] == 8
    counts = {v: fs.video_ids.count(v) for v in fs.video_ids}
    assert len(counts) == 8 and set(counts.values()) == {K * C}
    # the rows of a video are contiguous and share its label
    for i in range(0, len(fs.video_ids), K * C):
        assert len(set(fs.video_ids[i:i + K * C])) == 1 and len(set(fs.labels[i:i + K * C].tolist())) == 1
    # views differ (K clips x C crops are not copies of one view)
    v0 = fs.feats[: K * C]
    assert torch.cdist(v0, v0).triu(1)[torch.triu_indices(K * C, K * C, 1).unbind()].min() > 0


def test_grouping_is_by_video_id_not_batch_position(feats):
    small, whole = feats
    assert small.video_ids == whole.video_ids
    torch.testing.assert_close(small.feats, whole.feats)
    perm = torch.randperm(len(small.video_ids), generator=torch.Generator().manual_seed(0))
    shuffled_ids = [small.video_ids[i] for i in perm.tolist()]
    a = aggregate_views(small.feats, small.video_ids, how="mean_features", labels=small.labels)
    b = aggregate_views(small.feats[perm], shuffled_ids, how="mean_features", labels=small.labels[perm])
    order = [b.video_ids.index(v) for v in a.video_ids]
    torch.testing.assert_close(a.values, b.values[order])


def test_aggregation_matches_hand_computation(feats):
    fs, _ = feats
    probe = LinearProbe(fs.feats.shape[1], 8)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        probe.linear.weight.copy_(torch.randn(8, fs.feats.shape[1], generator=g))
        probe.linear.bias.copy_(torch.randn(8, generator=g))
        probe.mean.copy_(fs.feats.mean(0))
        probe.std.copy_(fs.feats.std(0))
    probe.class_counts.fill_(1)
    by_hand_logits, by_hand_probs, by_hand_feats = {}, {}, {}
    for vid in dict.fromkeys(fs.video_ids):
        rows = torch.stack([fs.feats[i] for i, v in enumerate(fs.video_ids) if v == vid])
        assert rows.shape[0] == K * C
        logits = [(probe.linear.weight @ ((r - probe.mean) / probe.std) + probe.linear.bias) for r in rows]
        by_hand_logits[vid] = sum(logits) / len(logits)
        by_hand_probs[vid] = sum(lg.softmax(0) for lg in logits) / len(logits)
        by_hand_feats[vid] = rows.sum(0) / rows.shape[0]
    for how, want in (("mean_logits", by_hand_logits), ("mean_softmax", by_hand_probs)):
        res = evaluate_probe(probe, fs.feats, fs.labels, fs.video_ids, views_per_video=K * C, how=how)
        got = dict(zip(res.video_ids, res.scores, strict=True))
        for vid, w in want.items():
            torch.testing.assert_close(got[vid], w, rtol=1e-4, atol=1e-5)
        top1 = sum(int(want[v].argmax()) == int(fs.labels[fs.video_ids.index(v)]) for v in want) / len(want)
        assert res.top1 == pytest.approx(top1)
    agg = aggregate_views(fs.feats, fs.video_ids, how="mean_features", views_per_video=K * C)
    for vid, f in zip(agg.video_ids, agg.values, strict=True):
        torch.testing.assert_close(f, by_hand_feats[vid])
    # a video with a missing view is an error, not a silently smaller average
    with pytest.raises(VideosslError, match=f"exactly {K * C} views"):
        evaluate_probe(probe, fs.feats[1:], fs.labels[1:], fs.video_ids[1:], views_per_video=K * C)


def test_augmented_train_passes(synth48):
    aug = ViewSpec(name="clip", sampler="random", frames=4, stride=1, size=20, train=True,
                   augment={"flip_p": 0.0, "blur_p": 0.0})
    fs = extract_features(ChannelMean(), str(synth48), "val", [aug], batch_size=4, passes=2, progress=False)
    assert fs.views_per_video == 2 and fs.num_videos == 8
    for i in range(0, len(fs.video_ids), 2):
        assert fs.video_ids[i] == fs.video_ids[i + 1]
        assert not torch.equal(fs.feats[i], fs.feats[i + 1])  # two different augmented draws
    assert len(set(fs.video_ids)) == 8
