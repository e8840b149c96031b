"""The contract "whatever make-shards writes, the reader can read", over the whole decoder zoo.

Every file of the zoo (tests/data/zoo.py: the formats real collections hold) is either written by
make-shards and then read back by `videossl data verify` with the frame count its json records, or
listed as skipped with a reason. The hard cases of real collections (audio first, HEVC in .mov, pts ==
dts with B-frames) are written and read back with the same frames as a sequential PyAV decode.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from tests.data.zoo import displayed, make_zoo, reference_decode
from videossl.data.decoding import open_video
from videossl.data.loader import VideoShardDataset, ViewSpec
from videossl.data.shards.format import iter_tar_samples, load_manifest, split_shard_paths, write_manifest
from videossl.data.shards.make import make_shards
from videossl.data.shards.synthetic import generate

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def zoo_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    clips = make_zoo(root / "clips")
    src = root / "src" / "zoo"
    src.mkdir(parents=True)
    for c in clips:
        shutil.copy(c.path, src / c.name)
    out = root / "shards"
    manifest = make_shards("folder", root / "src", out, progress=False)
    samples = {}
    for path in split_shard_paths(out, "train"):
        for _key, members in iter_tar_samples(path):
            meta = json.loads(members["json"])
            samples[Path(meta["source"]).name] = (meta, members[meta["container"]])
    return clips, manifest, samples, out


def test_every_zoo_file_is_written_readable_or_skipped_with_a_reason(zoo_shards):
    clips, manifest, samples, out = zoo_shards
    skipped = {Path(s["source"]).name: s["reason"] for s in manifest["skipped"]}
    for c in clips:
        assert (c.name in samples) != (c.name in skipped), c.name  # exactly one of the two
        if c.name in skipped:
            assert skipped[c.name].strip(), c.name
    assert "garbage.mp4" in skipped
    readable = [c.name for c in clips if c.expect == "readable"]
    assert all(name in samples for name in readable), [n for n in readable if n not in samples]
    r = subprocess.run([sys.executable, "-m", "videossl.cli", "data", "verify", str(out), "--no-progress"],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"verified {len(samples)} samples (auto): 0 unreadable" in r.stdout


@pytest.mark.parametrize("name", ["audio_first.mp4", "hevc.mov", "pts_eq_dts_bframes.mp4", "rotated.mp4",
                                  "mpeg4_part2.avi", "vp9.webm", "yuv420p10.mp4"])
def test_hard_cases_read_back_with_the_frames_of_a_sequential_decode(zoo_shards, name):
    clips, _, samples, _ = zoo_shards
    clip = next(c for c in clips if c.name == name)
    meta, data = samples[name]
    ref = displayed(clip.path, reference_decode(clip.path))
    assert meta["num_frames"] == len(ref) == clip.frames
    with open_video(data, "auto", expected_frames=meta["num_frames"], prefer=meta["decoder"]) as r:
        got = r.get_frames(np.arange(r.num_frames)).numpy()
    assert got.shape == ref.shape
    assert float(np.abs(got.astype(np.int16) - ref.astype(np.int16)).mean()) <= 1.0


def test_verify_names_a_planted_unreadable_member_and_write_exclude_makes_the_reader_skip_it(zoo_shards, tmp_path):
    *_, out = zoo_shards
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    shard = split_shard_paths(bad, "train")[0]
    with tarfile.open(shard) as tf:
        members = [(m, tf.extractfile(m).read()) for m in tf.getmembers()]
    victim = next(m.name for m, _ in members if not m.name.endswith(".json"))
    with tarfile.open(shard, "w") as tf:
        for m, data in members:
            if m.name == victim:
                data = data[: len(data) // 8]  # a truncated video: 1/8 of its bytes
                m.size = len(data)
            tf.addfile(m, io.BytesIO(data))
    key = victim.split(".")[0]
    cmd = [sys.executable, "-m", "videossl.cli", "data", "verify", str(bad), "--no-progress", "--write-exclude"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 1 and key in r.stdout and "unreadable" in r.stdout
    excluded = load_manifest(bad)["exclude"]
    assert [e["key"] for e in excluded] == [key]
    view = ViewSpec(name="clip", sampler="uniform", frames=2, stride=1, size=16, train=False)
    ds = VideoShardDataset(bad, [view], split="train", batch_size=1, train=False)
    seen = [k for b in ds for k in b["key"]]
    assert key not in seen
    assert any("excluded by data verify" in rec["reason"] for rec in ds.skip_log.records())
    write_manifest(bad, {**load_manifest(bad), "exclude": []})


def test_verify_passes_on_the_synthetic_set(tmp_path):
    generate(tmp_path / "s", 12, seed=0, size=64, num_frames=8, progress=False)
    r = subprocess.run([sys.executable, "-m", "videossl.cli", "data", "verify", str(tmp_path / "s"), "--backend", "all",
                        "--no-progress"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0 and "verified 12 samples (all): 0 unreadable, 0 with backend disagreements" in r.stdout


def test_a_vfr_video_is_sampled_by_time_at_a_target_rate(zoo_shards, monkeypatch):
    from videossl.data.loader import sampling

    *_, samples, out = zoo_shards
    retimed = []
    real = sampling.retime
    monkeypatch.setattr(sampling, "retime", lambda clip, t, fps: retimed.append(len(t)) or real(clip, t, fps))
    meta, _ = samples["vfr.mkv"]
    times = np.asarray(meta["frame_times"])  # recorded for the variable-frame-rate file only
    assert len(times) == meta["num_frames"] and "frame_times" not in samples["h264_baseline.mp4"][0]
    view = ViewSpec(name="clip", sampler="uniform", frames=4, target_fps=25 / 3, size=16, train=False)
    ds = VideoShardDataset(out, [view], split="train", batch_size=1, train=False)
    for batch in ds:
        if batch["key"][0] == meta["key"]:
            idx = batch["indices"][0][0].numpy()
            break
    assert retimed and set(retimed) == {len(times)}  # only the VFR sample, with its recorded times
    gaps = np.diff(times[idx])
    assert np.abs(gaps - 0.12).max() <= 0.02 + 1e-6, (idx, times[idx])  # 120 ms apart, up to the frame grid
