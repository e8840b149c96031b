"""Official-split handling end to end: small generated trees in the exact UCF101 and HMDB51 layouts
(3 splits each) -> make_shards per split -> extract_features -> probe, and the 3-split mean of
`videossl eval linear --splits 1,2,3`."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from videossl.data.loader import ViewSpec
from videossl.data.shards.make import make_shards
from videossl.data.shards.plan import sanitise_key
from videossl.eval.features import extract_features
from videossl.eval.probe import evaluate_probe, train_linear_probe

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from _videos import (  # noqa: E402
    HMDB_FLAGS,
    HMDB_VIDEOS,
    UCF_CLASSES,
    UCF_TEST_GROUPS,
    make_hmdb51,
    make_ucf101,
    make_video,
)

try:
    from .conftest import ChannelMean, one_error_line, write_yaml
except ImportError:  # tests/eval is not a package
    from conftest import ChannelMean, one_error_line, write_yaml

VIEW_DICT = {"name": "clip", "sampler": "uniform", "frames": 4, "stride": 1, "size": 16, "train": False,
             "num_clips": 1, "crops": 1}
VIEW = ViewSpec(**VIEW_DICT)


def tiny_video(path: Path) -> Path:
    seed = sum(map(ord, path.name))
    return make_video(path, num_frames=6, width=32, height=32, fps=10, seed=seed)


@pytest.fixture(scope="module")
def ucf(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("ucf")
    root, lists = make_ucf101(base, touch_file=tiny_video, groups=6, clips=1)  # 3 classes x 6 groups
    for n in (1, 2, 3):
        make_shards("ucf101", root, base / f"ucf-s{n}", annotations=lists, split=n, progress=False,
                    reencode=True, preset="ultrafast")  # the pipeline reads .mp4 members only
    return base


@pytest.fixture(scope="module")
def hmdb(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("hmdb")
    root, lists = make_hmdb51(base, touch_file=tiny_video)
    for n in (1, 2, 3):
        make_shards("hmdb51", root, base / f"hmdb-s{n}", annotations=lists, split=n, progress=False,
                    reencode=True, preset="ultrafast")  # the pipeline reads .mp4 members only
    return base


def split_features(data: Path):
    enc = ChannelMean()
    return (extract_features(enc, str(data), s, [VIEW], batch_size=4, progress=False) for s in ("train", "test"))


@pytest.mark.parametrize("n", [1, 2, 3])
def test_ucf101_split_groups_and_probe(ucf, n):
    data = ucf / f"ucf-s{n}"
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["classes"] == UCF_CLASSES  # classInd order
    train, test = split_features(data)
    group = lambda key: int(re.search(r"_g(\d\d)_c", key).group(1))  # noqa: E731
    test_groups = {group(k) for k in test.video_ids}
    train_groups = {group(k) for k in train.video_ids}
    assert test_groups == set(UCF_TEST_GROUPS[n])  # the official test groups, nothing else
    assert not test_groups & train_groups  # groups never straddle train/test
    assert train.num_videos == 3 * 4 and test.num_videos == 3 * 2
    # labels come from classInd, HandstandPushups (files: v_HandStandPushups_...) included
    for key, label in zip(test.video_ids, test.labels.tolist(), strict=True):
        assert UCF_CLASSES[label].lower() in key.lower()
    probe = train_linear_probe(train.feats, train.labels, 3, optimizer="lbfgs", epochs=20)
    res = evaluate_probe(probe, test.feats, test.labels, test.video_ids, views_per_video=1)
    assert res.num_videos == 6 and 0 <= res.top1 <= 1


@pytest.mark.parametrize("n", [1, 2, 3])
def test_hmdb51_flags_and_probe(hmdb, n):
    data = hmdb / f"hmdb-s{n}"
    classes = sorted(HMDB_VIDEOS)
    assert json.loads((data / "manifest.json").read_text())["classes"] == classes  # alphabetical
    train, test = split_features(data)
    want = {1: set(), 2: set(), 0: set()}
    for names in HMDB_VIDEOS.values():
        for name, flag in zip(names, HMDB_FLAGS[n], strict=True):
            want[flag].add(sanitise_key(Path(name).stem))
    assert set(train.video_ids) == want[1] and set(test.video_ids) == want[2]  # flag 0 never used
    assert train.num_videos == 3 * HMDB_FLAGS[n].count(1) and test.num_videos == 3 * HMDB_FLAGS[n].count(2)
    for key, label in zip(train.video_ids, train.labels.tolist(), strict=True):
        assert classes[label] in key
    probe = train_linear_probe(train.feats, train.labels, 3, optimizer="lbfgs", epochs=20)
    assert evaluate_probe(probe, test.feats, test.labels, test.video_ids).num_videos == 3


def test_three_split_mean_through_the_cli(ucf, tmp_path, videossl_main, capsys):
    cfg = write_yaml(tmp_path / "ucf.yaml", {
        "data_dir": str(ucf / "ucf-s{split}"), "split": 1, "views": [VIEW_DICT],
        "batch_size": 4, "num_workers": 0,
        "probe": {"kind": "svm", "svm_c": 1.0, "confidence_holdout": 0.25}})
    spec = json.dumps({"class_path": "videossl.models.Small3D", "init_args": {"width": 2}})
    out = tmp_path / "out"
    assert videossl_main(["eval", "linear", "--config", str(cfg), "--encoder", spec, "--random-only",
                          "--splits", "1,2,3", "--out", str(out), "--no-cache"]) == 0
    summary = json.loads((out / "results.json").read_text())
    per = [json.loads((out / f"split{n}" / "results.json").read_text())["results"][0]["top1"] for n in (1, 2, 3)]
    m = summary["mean"]["random-init"]["top1"]
    assert m["values"] == per and m["mean"] == pytest.approx(sum(per) / 3)
    assert summary["results"][0]["top1"] == pytest.approx(sum(per) / 3)
    assert "mean ± std" in (out / "report.md").read_text()
    for n in (1, 2, 3):
        assert (out / f"split{n}" / "report.md").is_file()
        assert json.loads((out / f"split{n}" / "results.json").read_text())["config"]["data_dir"].endswith(f"ucf-s{n}")
    # a split that was not made is one clear error
    rc = videossl_main(["eval", "linear", "--config", str(cfg), "--encoder", spec, "--random-only",
                        "--splits", "4", "--out", str(tmp_path / "o4"), "--no-cache"])
    assert "ucf-s4" in one_error_line(capsys, rc)
