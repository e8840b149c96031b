"""`videossl data make-long`: pseudo-long videos stitched from a generated UCF101-layout shard set."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest

from tests.data._videos import UCF_CLASSES, make_ucf101, make_video
from videossl.data.decoding import open_video
from videossl.data.make_long import make_long, person_caption, plan_groups
from videossl.data.shards.format import iter_tar_samples, load_manifest, split_shard_paths
from videossl.data.shards.make import make_shards
from videossl.errors import VideosslError


def _vid(path: Path) -> Path:  # 2-3 s clips at 10 fps: 2-3 frames each at 1 fps
    h = zlib.crc32(path.name.encode())
    return make_video(path, num_frames=20 + h % 10, fps=10, seed=h)


@pytest.fixture(scope="module")
def ucf_shards(tmp_path_factory):
    base = tmp_path_factory.mktemp("ucf")
    root, lists = make_ucf101(base, touch_file=_vid, groups=3, clips=2)  # 18 clips, 3 classes
    out = base / "shards"
    make_shards("ucf101", root, out, annotations=lists, split=1, progress=False)
    return out


def _long(out: Path) -> list[tuple[dict, bytes]]:
    m = load_manifest(out)
    return [(json.loads(mem["json"]), mem["mp4"]) for s in m["splits"] for p in split_shard_paths(out, s)
            for _, mem in iter_tar_samples(p)]


def test_stitched_ucf_videos_have_the_captions_frames_and_labels(ucf_shards, tmp_path):
    src = load_manifest(ucf_shards)
    m = make_long(ucf_shards, tmp_path / "long", clips=3, fps=1.0, size=32)
    assert m["classes"] == [f"{a} then {b}" for a in UCF_CLASSES for b in UCF_CLASSES]
    samples = _long(tmp_path / "long")
    split_of = {json.loads(mem["json"])["key"]: s for s in src["splits"] for p in split_shard_paths(ucf_shards, s)
                for _, mem in iter_tar_samples(p)}
    per_split = {s: v["num_samples"] for s, v in src["splits"].items()}
    # every clip used at most once, 3 different classes per video: one video per 3 clips of a split
    assert {s: v["num_samples"] for s, v in m["splits"].items()} == {s: n // 3 for s, n in per_split.items()}
    used = set()
    for meta, mp4 in samples:
        ev = meta["events"]
        assert len(ev) == 3 and len({e["label"] for e in ev}) == 3
        assert all(e["key"] not in used for e in ev)
        used.update(e["key"] for e in ev)
        names = [e["label_name"] for e in ev]
        assert meta["caption"] == person_caption(names) and meta["caption"].startswith("a person does ")
        assert "apply eye makeup" in meta["caption"] or "archery" in meta["caption"] or "handstand pushups" in meta["caption"]
        assert meta["label"] == ev[0]["label"] * 3 + ev[-1]["label"]
        assert ev[0]["start"] == 0 and all(a["end"] == b["start"] for a, b in zip(ev, ev[1:], strict=False))
        assert all(2 <= e["end"] - e["start"] <= 3 for e in ev)  # 2-3 s clips at 1 fps
        with open_video(mp4) as r:
            assert r.num_frames == meta["num_frames"] == ev[-1]["end"]
            assert r.get_frames([0]).shape == (1, 32, 32, 3)
        assert {split_of[e["key"]] for e in ev} == {meta["split"]}  # a long test video is made of test clips


def test_plan_groups_and_errors(ucf_shards, tmp_path):
    import numpy as np

    groups = plan_groups({0: 4, 1: 4, 2: 1}, 2, np.random.default_rng(0), None)
    assert len(groups) == 4 and all(len({c for c, _ in g}) == 2 for g in groups)
    flat = [x for g in groups for x in g]
    assert len(flat) == len(set(flat))
    with pytest.raises(VideosslError, match="different classes"):
        make_long(ucf_shards, tmp_path / "x", clips=4)
    with pytest.raises(VideosslError, match="at least 2"):
        make_long(ucf_shards, tmp_path / "y", clips=1)


def test_make_long_on_the_synthetic_set_joins_the_clip_captions(tmp_path):
    from videossl.data.shards.synthetic import generate

    generate(tmp_path / "s", 24, seed=2, size=32, num_frames=8, progress=False)
    make_long(tmp_path / "s", tmp_path / "l", clips=3, fps=0, size=32)
    meta, mp4 = _long(tmp_path / "l")[0]
    caps = [e["caption"] for e in meta["events"]]
    assert meta["caption"] == f"first {caps[0]}, then {caps[1]}, finally {caps[2]}"
    assert meta["num_frames"] == 24 and " over " not in meta["caption"]
