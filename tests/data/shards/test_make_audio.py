"""make-shards and sound: original bytes keep their audio; re-encoding keeps it (AAC, aligned) only with
``keep_audio``; the json's ``has_audio`` says what the stored bytes hold."""

from __future__ import annotations

import argparse
import io
import json
import tarfile
from pathlib import Path

import av
import numpy as np
import pytest

from tests.data._sound import RATE, dominant_hz, pyav_audio, tone_hz, write_av
from videossl.data.audio import decode_audio, on_video_timeline, read_audio
from videossl.data.shards.make import add_cli_arguments, make_shards

KINDS = {"plain": {}, "late": {"audio_start": 0.5}, "afirst": {"audio_first": True}, "mute": {"audio": False}}


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for i, (name, kw) in enumerate(KINDS.items()):
        write_av(src / f"c{i % 2}" / f"{name}.mp4", seconds=3.0, fps=10, **kw)
    return src


def stored(out: Path) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    for tar in sorted(out.glob("*.tar")):
        with tarfile.open(tar) as t:
            for m in t.getmembers():
                key, ext = m.name.split(".", 1)
                samples.setdefault(key, {})[ext] = t.extractfile(m).read()
    return samples


def src_path(source: Path, key: str) -> Path:
    return next(source.glob(f"*/{key}.mp4"))


def test_original_bytes_keep_the_audio_and_decode_the_same(source, tmp_path):
    make_shards("folder", source, tmp_path / "out", progress=False)
    s = stored(tmp_path / "out")
    assert sorted(s) == sorted(KINDS)
    for key, members in s.items():
        info = json.loads(members["json"])
        path = src_path(source, key)
        assert members["mp4"] == path.read_bytes()  # stored unchanged, audio included
        assert info["has_audio"] is (key != "mute")
        if key == "mute":
            continue
        ref, ref_start = pyav_audio(path)  # PyAV on the source file
        wave, start = decode_audio(members["mp4"], RATE)  # the reader's decode of the shard member, in memory
        assert np.array_equal(wave, ref) and start == ref_start


@pytest.mark.parametrize("keep", [True, False])
def test_reencoding_keeps_aligned_aac_only_with_keep_audio(source, tmp_path, keep):
    make_shards("folder", source, tmp_path / "out", reencode=True, keep_audio=keep, progress=False)
    for key, members in stored(tmp_path / "out").items():
        info = json.loads(members["json"])
        with av.open(io.BytesIO(members["mp4"])) as c:
            streams = [(s.type, s.codec_context.name) for s in c.streams]
            layout = c.streams.audio[0].codec_context.layout.name if c.streams.audio else None
            rate = c.streams.audio[0].codec_context.sample_rate if c.streams.audio else None
        has = keep and key != "mute"
        assert info["has_audio"] is has
        assert ("audio", "aac") in streams if has else all(t != "audio" for t, _ in streams)
        if not has:
            continue
        assert (layout, rate) == ("mono", RATE)  # the source's layout and rate (not AAC's stereo default)
        x = on_video_timeline(read_audio(members["mp4"], RATE), info["num_frames"], info["fps"])[0]
        onset = int(np.argmax(np.abs(x) > 0.05)) / RATE
        assert onset == pytest.approx(0.5 if key == "late" else 0.0, abs=0.01)  # the audio offset survives
        for sec in range(3):
            assert dominant_hz(x[sec * RATE + 3000 : (sec + 1) * RATE - 3000]) == pytest.approx(tone_hz(sec), abs=20)


def test_keep_audio_help_says_both_cases():
    text = add_cli_arguments(argparse.ArgumentParser()).format_help()
    flat = " ".join(text.split())
    assert "when re-encoding, keep the first audio stream as AAC" in flat
    assert "Without re-encoding the original bytes are stored, audio included" in flat
