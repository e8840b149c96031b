"""make_shards on tiny generated videos (32x24, 8-15 frames) in each source layout."""

from __future__ import annotations

import argparse
import io
import json
import tarfile
import zlib
from pathlib import Path

import pytest

from tests.data._videos import (
    HMDB_FLAGS,
    K_ROWS,
    decode_info,
    keyframe_positions,
    kname,
    make_hmdb51,
    make_kinetics,
    make_ucf101,
    make_video,
)
from videossl.data.shards.format import load_manifest
from videossl.data.shards.make import add_cli_arguments, make_shards, run_cli
from videossl.errors import VideosslError


def vid(path: Path) -> Path:
    """A distinct tiny video per file name (content and length depend on the name)."""
    h = zlib.crc32(path.name.encode())
    return make_video(path, num_frames=8 + h % 8, seed=h)


def read_set(out: Path) -> dict[str, dict[str, bytes]]:
    """key -> {ext: bytes} over every shard the manifest lists, checking shard names and counts."""
    m = load_manifest(out)
    samples: dict[str, dict[str, bytes]] = {}
    for split, entry in m["splits"].items():
        index = json.loads((out / f"{split}.index.json").read_text())
        assert [s["url"] for s in index["shardlist"]] == [s["name"] for s in entry["shards"]]
        for sh in entry["shards"]:
            with tarfile.open(out / sh["name"]) as t:
                keys = set()
                for member in t.getmembers():
                    key, ext = member.name.split(".", 1)
                    samples.setdefault(key, {})[ext] = t.extractfile(member).read()
                    keys.add(key)
            assert len(keys) == sh["num_samples"]
    return samples


def check_counts(m: dict, *, inp: int, written: int, skipped: int, unused: int = 0) -> None:
    c = m["counts"]
    assert c == {"input": inp, "written": written, "skipped": skipped, "unused": unused}
    assert c["input"] == c["written"] + c["skipped"]
    assert sum(s["num_samples"] for s in m["splits"].values()) == written
    assert len(m["skipped"]) == skipped


def meta(sample: dict[str, bytes]) -> dict:
    return json.loads(sample["json"])


# ----------------------------------------------------------------------------- folder + bad files
def test_folder_original_bytes_bad_files_and_metadata(tmp_path: Path):
    src = tmp_path / "src"
    for cls in ("bike", "swim"):
        for i in range(3):
            vid(src / cls / f"clip {i}.mp4")  # a space in the name
    vid(src / "swim" / "old.avi")
    (src / "bike" / "noise.mp4").write_bytes(bytes(range(256)) * 40)  # random bytes named .mp4
    (src / "bike" / "zero.mp4").write_bytes(b"")
    out = tmp_path / "out"
    m = make_shards("folder", src, out, max_count=3, progress=False)

    check_counts(m, inp=9, written=7, skipped=2)
    reasons = {s["source"]: s["reason"] for s in m["skipped"]}
    assert reasons["bike/zero.mp4"] == "empty file (0 bytes)"
    assert reasons["bike/noise.mp4"].startswith("cannot open")
    assert m["classes"] == ["bike", "swim"]
    assert m["splits"]["train"]["per_class"] == {"bike": 3, "swim": 4}
    # 9 planned in shards of 3 (shuffled); the 2 skipped files leave holes, shards are not refilled
    counts = [s["num_samples"] for s in m["splits"]["train"]["shards"]]
    assert len(counts) == 3 and sum(counts) == 7 and max(counts) == 3
    assert m["kind"] == "folder" and m["params"]["reencode"] is False

    import decord  # after av (imported by _videos): whichever loads first provides the FFmpeg libraries

    samples = read_set(out)
    assert len(samples) == 7
    for key, s in samples.items():
        info = meta(s)
        assert info["key"] == key and "." not in key and "/" not in key
        ext = info["container"]
        assert set(s) == {ext, "json"} and ext == Path(info["source"]).suffix[1:]
        original = (src / info["source"]).read_bytes()
        assert s[ext] == original  # no re-encode: the bytes are the source file's
        truth = decode_info(original)
        assert (info["num_frames"], info["width"], info["height"]) == (truth["num_frames"], 32, 24)
        assert info["fps"] == 10.0 and info["duration"] == pytest.approx(info["num_frames"] / 10, abs=0.01)
        assert info["label"] == m["classes"].index(info["label_name"]) and info["split"] == "train"
        assert len(decord.VideoReader(io.BytesIO(s[ext]))) == info["num_frames"]  # what readers will see
    assert {meta(s)["container"] for s in samples.values()} == {"mp4", "avi"}
    # stems collide across classes -> the relative path (sanitised) is the key
    assert meta(samples["bike_clip_0"])["source"] == "bike/clip 0.mp4"
    assert meta(samples["old"])["source"] == "swim/old.avi"


# ----------------------------------------------------------------------------- official layouts
def test_ucf101_split_counts_missing_and_case_quirk(tmp_path: Path):
    root, lists = make_ucf101(tmp_path, touch_file=vid, groups=3, clips=1)  # 9 avi, split 1 tests g01-g02
    (root / "Archery" / "v_Archery_g03_c01.avi").unlink()  # a train video listed but missing
    out = tmp_path / "out"
    m = make_shards("ucf101", root, out, annotations=lists, split=1, progress=False)

    check_counts(m, inp=9, written=8, skipped=1)
    assert m["skipped"] == [{"source": "Archery/v_Archery_g03_c01.avi", "reason": "file not found"}]
    assert m["classes"] == ["ApplyEyeMakeup", "Archery", "HandstandPushups"]
    assert m["splits"]["train"]["per_class"] == {"ApplyEyeMakeup": 1, "Archery": 0, "HandstandPushups": 1}
    assert m["splits"]["test"]["per_class"] == {"ApplyEyeMakeup": 2, "Archery": 2, "HandstandPushups": 2}
    assert m["params"]["official_split"] == 1
    samples = read_set(out)
    for s in samples.values():
        info = meta(s)
        assert info["label"] == m["classes"].index(info["source"].split("/")[0])  # classInd is 1-based
        assert info["container"] == "avi"
        assert (info["split"] == "test") == ("_g03_" not in info["source"])
    hs = [meta(s) for s in samples.values() if meta(s)["label_name"] == "HandstandPushups"]
    assert len(hs) == 3 and all("v_HandStandPushups_" in h["source"] for h in hs)


def test_hmdb51_unused_is_counted_apart(tmp_path: Path):
    root, lists = make_hmdb51(tmp_path, touch_file=vid)
    (root / "catch" / "b_catch_1.avi").unlink()  # flag 1 in split 2
    (root / "cartwheel" / "x_cartwheel_3.avi").write_bytes(b"\x00" * 64)  # unused (flag 0) in split 2
    m = make_shards("hmdb51", root, tmp_path / "out", annotations=lists, split=2, progress=False)
    flags = HMDB_FLAGS[2]
    used = 3 * (flags.count(1) + flags.count(2))
    check_counts(m, inp=used, written=used - 1, skipped=1, unused=3 * flags.count(0))
    assert m["splits"]["train"]["num_samples"] == 3 * flags.count(1) - 1
    assert m["splits"]["test"]["per_class"] == {"brush_hair": 1, "cartwheel": 1, "catch": 1}
    assert m["skipped"][0]["source"] == "catch/b_catch_1.avi"
    sources = {meta(s)["source"] for s in read_set(tmp_path / "out").values()}
    assert "cartwheel/(Rad)Schlag_die_Bank!_cartwheel_f_cm_np1_le_med_0.avi" in sources
    assert "cartwheel/cart&wheel;_cartwheel_f_cm_np1_ri_med_2.avi" in sources


def test_kinetics_missing_files_are_counted_and_listed(tmp_path: Path):
    root, ann = make_kinetics(tmp_path, touch_file=vid)
    m = make_shards("kinetics", root, tmp_path / "out", annotations=ann, progress=False)
    check_counts(m, inp=len(K_ROWS) + 2, written=5, skipped=4)
    assert {s["source"] for s in m["skipped"]} == {
        kname("missing0000", 1, 11),
        kname("yyyyyyyyyyy", 1, 11),
        kname("nofile00000", 0, 10),
        kname("tttttttttt2", 0, 10),
    }
    assert m["classes"] == ["abseiling", "air drumming", "catching fish", "zumba"]
    assert {k: v["num_samples"] for k, v in m["splits"].items()} == {"train": 3, "val": 1, "test": 1}
    samples = read_set(tmp_path / "out")
    assert "-3B32lodo2M_000059_000069" in samples  # the clip name is the key
    assert meta(samples["-3B32lodo2M_000059_000069"])["label_name"] == "air drumming"
    unlabelled = meta(samples["tttttttttt1_000003_000013"])
    assert unlabelled["label"] == -1 and unlabelled["label_name"] is None and unlabelled["split"] == "test"


# ----------------------------------------------------------------------------- re-encode
def test_reencode_size_fps_gop_and_audio(tmp_path: Path):
    src = tmp_path / "src"
    make_video(src / "a" / "tall.mp4", num_frames=12, width=24, height=32, fps=10, audio=True)
    make_video(src / "b" / "wide.avi", num_frames=12, width=32, height=24, fps=10)
    m = make_shards(
        "folder", src, tmp_path / "out", short_side=16, fps=5, keyframe_interval=2, crf=30, progress=False
    )
    check_counts(m, inp=2, written=2, skipped=0)
    assert m["params"]["short_side"] == 16 and m["params"]["keyframe_interval"] == 2
    samples = read_set(tmp_path / "out")
    sizes = {"tall": (16, 22), "wide": (22, 16)}  # short side 16, aspect kept, even sizes
    for key, s in samples.items():
        info = meta(s)
        assert set(s) == {"mp4", "json"} and info["container"] == "mp4"
        truth = decode_info(s["mp4"])
        assert truth["codec"] == "h264" and truth["audio"] == 0  # audio dropped by default
        assert (truth["width"], truth["height"]) == sizes[key] == (info["width"], info["height"])
        assert truth["fps"] == 5.0 == info["fps"]
        assert truth["num_frames"] == 6 == info["num_frames"]  # 1.2 s at 5 fps
        assert keyframe_positions(s["mp4"]) == [0, 2, 4]
    # keyframe interval alone (no size/fps change) re-encodes; --keep-audio keeps the audio
    m2 = make_shards("folder", src, tmp_path / "out2", keyframe_interval=5, keep_audio=True, progress=False)
    s2 = read_set(tmp_path / "out2")
    tall = decode_info(s2["tall"]["mp4"])
    assert (tall["width"], tall["height"], tall["num_frames"], tall["fps"]) == (24, 32, 12, 10.0)
    assert tall["audio"] == 1 and meta(s2["tall"])["has_audio"] is True
    assert keyframe_positions(s2["wide"]["mp4"]) == [0, 5, 10]
    assert m2["params"]["keep_audio"] is True


# ----------------------------------------------------------------------------- resume & determinism
def tar_stats(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(out.glob("*.tar"))}


def test_resume_rewrites_only_what_is_missing(tmp_path: Path):
    src = tmp_path / "src"
    for cls in ("a", "b"):
        for i in range(4):
            vid(src / cls / f"{cls}{i}.mp4")
    (src / "a" / "broken.mp4").write_bytes(b"not a video")
    out = tmp_path / "out"
    m1 = make_shards("folder", src, out, max_count=3, progress=False)
    before = tar_stats(out)
    bytes_before = {n: (out / n).read_bytes() for n in before}
    assert list(before) == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]

    # everything present: nothing is written
    m2 = make_shards("folder", src, out, max_count=3, progress=False)
    assert tar_stats(out) == before and m2 == m1

    # one shard deleted, plus a stale .part of a crash: only that shard comes back, identical
    (out / "train-000001.tar").unlink()
    (out / "train-000002.tar.part").write_bytes(b"half")
    m3 = make_shards("folder", src, out, max_count=3, progress=False)
    after = tar_stats(out)
    assert after["train-000000.tar"] == before["train-000000.tar"]
    assert after["train-000002.tar"] == before["train-000002.tar"]
    assert after["train-000001.tar"] != before["train-000001.tar"]
    assert (out / "train-000001.tar").read_bytes() == bytes_before["train-000001.tar"]
    assert not list(out.glob("*.part")) and m3 == m1
    check_counts(m3, inp=9, written=8, skipped=1)

    # a truncated shard fails verification and is rewritten; others stay
    data = (out / "train-000002.tar").read_bytes()
    (out / "train-000002.tar").write_bytes(data[: len(data) // 2])
    stamp = tar_stats(out)
    make_shards("folder", src, out, max_count=3, progress=False)
    after = tar_stats(out)
    assert (out / "train-000002.tar").read_bytes() == data
    assert after["train-000000.tar"] == stamp["train-000000.tar"]

    # different encode parameters: every shard is redone
    stamp = tar_stats(out)
    make_shards("folder", src, out, max_count=3, keyframe_interval=4, progress=False)
    assert all(tar_stats(out)[n] != stamp[n] for n in stamp)


def test_workers_give_the_same_bytes(tmp_path: Path):
    src = tmp_path / "src"
    for i in range(4):
        vid(src / "c" / f"v{i}.mp4")
    (src / "c" / "bad.mp4").write_bytes(b"\x01" * 100)
    kw = dict(max_count=2, short_side=16, keyframe_interval=4, progress=False)
    m1 = make_shards("folder", src, tmp_path / "w1", workers=1, **kw)
    m2 = make_shards("folder", src, tmp_path / "w2", workers=2, **kw)
    assert m1["splits"] == m2["splits"] and m1["skipped"] == m2["skipped"]
    for p in sorted((tmp_path / "w1").glob("*.tar")):
        assert p.read_bytes() == (tmp_path / "w2" / p.name).read_bytes()


# ----------------------------------------------------------------------------- CLI and errors
def test_cli_arguments_and_run(tmp_path: Path):
    src = tmp_path / "src"
    for cls in ("x", "y"):
        for i in range(3):
            vid(src / cls / f"{cls}{i}.mp4")
    parser = add_cli_arguments(argparse.ArgumentParser(prog="videossl data make-shards"))
    assert "--source ucf101" in parser.epilog and "--source kinetics" in parser.epilog
    args = parser.parse_args(
        [
            "--source",
            "folder",
            "--root",
            str(src),
            "--out",
            str(tmp_path / "o"),
            "--val-fraction",
            "0.34",
            "--seed",
            "1",
            "--max-bytes",
            "1M",
            "--no-progress",
        ]
    )
    assert args.max_bytes == 1 << 20
    assert run_cli(args) == 0
    m = load_manifest(tmp_path / "o")
    assert m["splits"]["val"]["per_class"] == {"x": 1, "y": 1}
    assert m["splits"]["train"]["num_samples"] == 4
    with pytest.raises(SystemExit):
        parser.parse_args(["--source", "ucf102", "--root", "r", "--out", "o"])


def test_user_errors_before_any_work(tmp_path: Path):
    src = tmp_path / "src"
    vid(src / "c" / "v.mp4")
    with pytest.raises(VideosslError, match="valid layouts: folder, csv, ucf101, hmdb51, kinetics"):
        make_shards("youtube", src, tmp_path / "o")
    with pytest.raises(VideosslError, match="even"):
        make_shards("folder", src, tmp_path / "o", short_side=15)
    with pytest.raises(VideosslError, match="does not exist"):
        make_shards("folder", tmp_path / "nope", tmp_path / "o")
    assert not (tmp_path / "o").exists()  # nothing written for a bad call
    other = tmp_path / "other"
    vid(other / "d" / "w.mp4")
    make_shards("folder", src, tmp_path / "o", progress=False)
    with pytest.raises(VideosslError, match="already holds a shard set"):
        make_shards("folder", other, tmp_path / "o", progress=False)
