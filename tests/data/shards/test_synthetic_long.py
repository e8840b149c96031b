"""The long synthetic preset: 128-256 frames of 3-8 events, order-defined labels, per-event ground truth."""

from __future__ import annotations

import json

import pytest

from videossl.data.decoding import open_video
from videossl.data.loader import VideoShardDataset, ViewSpec, make_loader
from videossl.data.shards.format import load_manifest
from videossl.data.shards.synthetic import CLASSES
from videossl.data.shards.synthetic_long import PAIR_CLASSES, generate_long, long_caption
from videossl.errors import VideosslError


@pytest.fixture(scope="module")
def long_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("long")
    generate_long(out, 12, seed=3, progress=False, size=32)
    return out


def _samples(root):
    import webdataset as wds

    m = load_manifest(root)
    urls = [str(root / s["name"]) for split in m["splits"].values() for s in split["shards"]]
    return [r for r in wds.tariterators.tarfile_samples([{"url": u} for u in urls])]


def test_long_videos_events_labels_and_captions(long_set):
    m = load_manifest(long_set)
    assert m["classes"] == list(PAIR_CLASSES) and len(m["classes"]) == 64
    assert sum(v["num_samples"] for v in m["splits"].values()) == 12
    for raw in _samples(long_set):
        meta = json.loads(raw["json"])
        ev = meta["events"]
        assert 3 <= len(ev) <= 8 and 128 <= meta["num_frames"] <= 256
        assert ev[0]["start"] == 0 and all(a["end"] <= b["start"] for a, b in zip(ev, ev[1:], strict=False))
        assert ev[-1]["end"] <= meta["num_frames"] and all(e["end"] - e["start"] == 16 for e in ev)
        first, last = ev[0]["label"], ev[-1]["label"]
        assert meta["label"] == first * len(CLASSES) + last
        assert meta["label_name"] == f"{CLASSES[first]} then {CLASSES[last]}"
        caps = [e["caption"] for e in ev]
        assert meta["caption"] == long_caption(caps) and meta["caption"].startswith(f"first {caps[0]}, then ")
        assert meta["caption"].endswith(f", finally {caps[-1]}") and " over " not in meta["caption"]
        assert meta["shuffled_captions"] and meta["caption"] not in meta["shuffled_captions"]
        for q in meta["questions"]:
            assert q["answer"] in ("a", "b") and q["a"] != q["b"]
        with open_video(raw["mp4"]) as r:
            assert r.num_frames == meta["num_frames"]
            gap = next((e["end"] for a, e in zip(ev[1:], ev, strict=False) if a["start"] > e["end"] + 1), None)
            if gap is not None:  # a still gap holds the event's last frame
                f = r.get_frames([gap - 1, gap]).float()
                assert (f[0] - f[1]).abs().mean() < 2.0


def test_long_set_reads_at_1fps_from_the_start(long_set):
    views = [ViewSpec(name="clip", sampler="long", frames=128, target_fps=1.0, size=32, train=False)]
    ds = VideoShardDataset(str(long_set), views, split="train", batch_size=2, train=False, rank=0, world_size=1)
    b = next(iter(make_loader(ds)))
    assert b["views"][0].shape == (2, 128, 3, 32, 32)
    assert b["indices"][0][:, 0].tolist() == [0, 0]
    # each sample's event starts, from its json, padded with -1 to the batch's most events
    metas = {json.loads(r["json"])["key"]: json.loads(r["json"]) for r in _samples(long_set)}
    starts = [[e["start"] for e in metas[k]["events"]] for k in b["key"]]
    width = max(map(len, starts))
    assert b["event_starts"].tolist() == [s + [-1] * (width - len(s)) for s in starts]


def test_event_starts_read_from_the_json_or_absent():
    from videossl.data.loader.dataset import event_starts

    assert event_starts({"events": [{"start": 20}, {"start": 0}]}).tolist() == [0, 20]
    for meta in ({}, {"events": []}, {"events": [{"end": 3}]}, {"events": "x"}):
        assert event_starts(meta) is None


def test_long_generation_is_reproducible_and_checks_its_frames(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    generate_long(a, 2, seed=5, progress=False, size=32)
    generate_long(b, 2, seed=5, progress=False, size=32)
    ra, rb = _samples(a), _samples(b)
    assert [x["json"] for x in ra] == [x["json"] for x in rb] and [x["mp4"] for x in ra] == [x["mp4"] for x in rb]
    with pytest.raises(VideosslError, match="per event"):
        generate_long(tmp_path / "c", 2, num_frames=100, progress=False)
