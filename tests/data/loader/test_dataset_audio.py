"""The reader with audio: ``VideoShardDataset(audio=AudioSpec(...))`` on shards of generated H.264 + AAC
mp4s whose tone changes every second (tests/data/_sound.py), with BraVe's narrow / broad pair."""

from __future__ import annotations

import io
import logging
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from tests.data._sound import RATE, tone_hz, write_av
from videossl.data.audio import AudioSpec, cut_audio, log_mel_spectrogram, mel_filterbank, on_video_timeline, read_audio
from videossl.data.loader import SkipLog, VideoShardDataset, ViewSpec, collate, make_loader
from videossl.data.loader.datamodule import VideoDataModule
from videossl.data.loader.transforms import AugmentConfig
from videossl.data.shards.format import SplitWriter, build_manifest, json_bytes, write_manifest
from videossl.errors import VideosslError

FPS = 10
PLAIN = AugmentConfig(output="uint8", flip_p=0.0, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)
PAIR = [  # narrow 4 x 2; broad 25 x 2: a 49-frame span, 50 frames = 5 s of sound: longer than the 4 s videos
    ViewSpec(name="narrow", sampler="narrow", frames=4, stride=2, size=16, augment=PLAIN),
    ViewSpec(name="broad", sampler="broad", frames=25, stride=2, size=16, augment=PLAIN),
]
SPEC = AudioSpec(sample_rate=RATE, n_mels=40, view="broad")
EVAL = [ViewSpec(name="e", sampler="uniform", frames=4, stride=2, size=16, train=False, augment=PLAIN)]


def write_set(out: Path, videos: dict[str, tuple[bytes, float]], split: str = "train") -> Path:
    """A one-shard set of ``videos[key] = (mp4 bytes, seconds)`` at ``FPS``."""
    out.mkdir(parents=True, exist_ok=True)
    w = SplitWriter(out, split, max_count=len(videos))
    for i, (key, (data, seconds)) in enumerate(videos.items()):
        with av.open(io.BytesIO(data)) as c:
            has_audio = bool(c.streams.audio)
        n = int(round(seconds * FPS))
        meta = {"key": key, "label": i % 2, "split": split, "fps": FPS, "num_frames": n, "width": 32, "height": 32,
                "duration": seconds, "source": f"{key}.mp4", "container": "mp4", "has_audio": has_audio}
        w.write(key, {"mp4": data, "json": json_bytes(meta)})
    manifest = build_manifest(kind="test", classes=["c0", "c1"], splits={split: w.close()},
                              labels_per_split={split: [i % 2 for i in range(len(videos))]}, params={"fps": FPS},
                              video={"width": 32, "height": 32})
    write_manifest(out, manifest)
    return out


@pytest.fixture(scope="module")
def videos() -> dict[str, tuple[bytes, float]]:
    return {
        "plain": (write_av(seconds=4.0, fps=FPS), 4.0),
        "long": (write_av(seconds=8.0, fps=FPS), 8.0),
        "afirst": (write_av(seconds=4.0, fps=FPS, audio_first=True), 4.0),
        "late": (write_av(seconds=4.0, fps=FPS, audio_start=0.5), 4.0),
    }


@pytest.fixture(scope="module")
def audio_set(tmp_path_factory, videos) -> Path:
    return write_set(tmp_path_factory.mktemp("audio_set"), videos)


def one_epoch(ds, num_workers=0):
    return list(make_loader(ds, num_workers=num_workers))


def band_of(hz: float) -> int:
    """The mel band a tone at ``hz`` (a multiple of the 50 Hz FFT bin spacing) lands in most."""
    return int(mel_filterbank(RATE, 320, 40, 80.0, 7600.0)[int(round(hz / 50))].argmax())


def test_brave_pair_batch_keys_shapes_and_the_window_content(audio_set, videos):
    ds = VideoShardDataset(audio_set, PAIR, split="train", batch_size=2, seed=3, placement="inside_random", audio=SPEC)
    batches = [b for _ in range(3) for b in one_epoch(ds)]  # three passes: several random windows per video
    broad = 1
    checked = 0
    for b in batches:
        assert b["spectrogram"].shape == (2, 1, 500, 40) and b["spectrogram"].dtype == torch.float32  # 5 s / 160
        assert b["has_audio"].dtype == torch.bool and b["has_audio"].all()
        for i, key in enumerate(b["key"]):
            data, seconds = videos[key]
            n = int(round(seconds * FPS))
            start = int(b["indices"][broad][i][0])  # the broad clip's start, modulo the video's length
            assert b["looped"][i, broad] == (seconds < 5.0)
            # the same numbers as the library's steps on the stored bytes, by hand
            wave = on_video_timeline(read_audio(data, RATE), n, FPS)
            want = log_mel_spectrogram(torch.from_numpy(cut_audio(wave, RATE, start / FPS, 5.0)), SPEC)
            torch.testing.assert_close(b["spectrogram"][i], want, rtol=0, atol=0)
            # what is heard: each spectrogram frame's loudest band is the tone of its time in the (looped) video
            bands = b["spectrogram"][i, 0].argmax(dim=1).numpy()
            for j in range(500):
                t = (start / FPS + j * 160 / RATE) % seconds
                near_edge = min(t % 1.0, 1.0 - t % 1.0) < 0.04 or t > seconds - 0.04
                if near_edge or (key == "late" and t < 0.56):
                    continue
                assert bands[j] == band_of(float(tone_hz(t))), (key, start, j, t)
                checked += 1
        if "late" in b["key"]:  # the late sound: silent before 0.5 s (AAC pre-echo reaches back < 128 ms)
            i = b["key"].index("late")
            start = int(b["indices"][broad][i][0])
            ts = (start / FPS + np.arange(500) * 160 / RATE) % 4.0
            quiet = b["spectrogram"][i, 0][torch.from_numpy(ts < 0.35)]  # frames of 20 ms that end before 0.37 s
            assert quiet.numel() == 0 or quiet.max() < 1.0
    assert checked > 3000


def test_audio_draws_nothing_from_the_sampling_rng(audio_set):
    plain = one_epoch(VideoShardDataset(audio_set, PAIR, split="train", batch_size=2, seed=5))
    sound = one_epoch(VideoShardDataset(audio_set, PAIR, split="train", batch_size=2, seed=5, audio=SPEC))
    assert "spectrogram" not in plain[0] and "has_audio" not in plain[0]  # no audio asked: no keys, no decode
    for a, b in zip(plain, sound, strict=True):
        assert a["key"] == b["key"]
        for x, y in zip(a["views"] + a["indices"], b["views"] + b["indices"], strict=True):
            assert torch.equal(x, y)


def test_seconds_window_on_eval_views(audio_set, videos):
    spec = AudioSpec(sample_rate=RATE, n_mels=40, seconds=1.5, view="unused")
    ds = VideoShardDataset(audio_set, EVAL, split="train", batch_size=4, train=False, audio=spec)
    (b,) = one_epoch(ds)
    assert b["spectrogram"].shape == (4, 1, 150, 40)
    for i, key in enumerate(b["key"]):
        data, seconds = videos[key]
        wave = on_video_timeline(read_audio(data, RATE), int(seconds * FPS), FPS)
        want = log_mel_spectrogram(torch.from_numpy(wave[0, : int(1.5 * RATE)]), spec)
        torch.testing.assert_close(b["spectrogram"][i, 0], want)


@pytest.fixture(scope="module")
def no_audio_set(tmp_path_factory, videos) -> Path:
    broken = bytearray(videos["plain"][0])
    with av.open(io.BytesIO(bytes(broken))) as c:
        packets = [(p.pos, p.size) for p in c.demux(audio=0) if p.size]
    rng = np.random.default_rng(1)
    for pos, size in packets[2:]:  # garbage AAC payloads: the video still decodes
        broken[pos : pos + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    return write_set(tmp_path_factory.mktemp("no_audio"), {
        "plain": videos["plain"], "mute": (write_av(seconds=4.0, fps=FPS, audio=False), 4.0),
        "broken": (bytes(broken), 4.0), "long": videos["long"],
    })


def test_no_audio_skip_mode_is_a_counted_skip_in_a_worker(no_audio_set, tmp_path):
    ds = VideoShardDataset(no_audio_set, PAIR, split="train", batch_size=1, train=False, audio=SPEC,
                           skip_log_dir=tmp_path / "skips")
    batches = one_epoch(ds, num_workers=1)  # in a worker process: a skip, never a crash
    assert sorted(k for b in batches for k, d in zip(b["key"], b["duplicate"], strict=True) if not d) == ["long", "plain"]
    reasons = {r["key"]: r["reason"] for r in SkipLog(tmp_path / "skips").records()}
    assert reasons["mute"] == "no audio: no audio stream (audio.missing is skip)"
    assert reasons["broken"].startswith("audio decode error: audio stream 1 (aac) does not decode")
    assert SkipLog(tmp_path / "skips").counts() == Counter({"no audio": 1, "audio decode error": 1})


def test_no_audio_silence_mode_zeros_and_a_count(no_audio_set, tmp_path, caplog):
    spec = AudioSpec(sample_rate=RATE, n_mels=40, view="broad", missing="silence")
    ds = VideoShardDataset(no_audio_set, PAIR, split="train", batch_size=3, train=False, audio=spec,
                           skip_log_dir=tmp_path / "skips")
    with caplog.at_level(logging.INFO, logger="videossl.data.loader.dataset"):
        b = one_epoch(ds)[0]  # (the 2nd batch pads with duplicates, which are not counted again)
    assert b["key"] == ["plain", "mute", "long"]  # the broken stream is still a skipped sample
    assert b["has_audio"].tolist() == [True, False, True]
    assert b["spectrogram"][1].abs().max() == 0 and b["spectrogram"][0].abs().max() > 1
    assert [r["key"] for r in SkipLog(tmp_path / "skips").records()] == ["broken"]
    assert "1 sample(s) without an audio stream got a silent spectrogram" in caplog.text


def test_configuration_errors_and_collate_mismatch(audio_set):
    with pytest.raises(VideosslError, match="audio.view 'nope' is not one of the views"):
        VideoShardDataset(audio_set, PAIR, split="train", batch_size=2, audio=AudioSpec(sample_rate=RATE, view="nope"))
    with pytest.raises(VideosslError, match="Nyquist"):
        VideoShardDataset(audio_set, PAIR, split="train", batch_size=2, audio={"sample_rate": 8000, "view": "broad"})
    base = {"key": "k", "shard": "s", "label": 0, "duplicate": False, "padded": False, "looped": False, "views": [],
            "valid": [], "indices": [], "has_audio": True}
    with pytest.raises(VideosslError, match="audio windows of one batch differ in length"):
        collate([base | {"spectrogram": torch.zeros(1, 500, 40)}, base | {"spectrogram": torch.zeros(1, 417, 40)}])


def test_datamodule_takes_a_dict_and_leaves_eval_views_without_the_view_alone(audio_set, tmp_path, capsys):
    dm = VideoDataModule(str(audio_set), val_split="train", test_split=None, batch_size=2, eval_batch_size=2,
                         num_workers=0, train_views=PAIR, eval_views=EVAL, placement="aligned_start", rank=0,
                         world_size=1, audio={"sample_rate": RATE, "n_mels": 40, "view": "broad"},
                         skip_log_dir=str(tmp_path / "skips"))
    assert dm.audio == SPEC
    dm.setup("fit")
    assert "data[validate]: no audio (no eval view is named 'broad'; views: e)" in capsys.readouterr().out
    b = next(iter(dm.train_dataloader()))
    assert b["spectrogram"].shape == (2, 1, 500, 40) and b["has_audio"].all()
    v = next(iter(dm.val_dataloader()))
    assert "spectrogram" not in v
    with pytest.raises(VideosslError, match="audio.missing"):
        VideoDataModule(str(audio_set), audio={"missing": "drop"})


def test_spectrogram_augment_applies_to_training_samples_only(audio_set):
    """With ``audio.augment`` a training sample's spectrogram is the plain one with a gain (in the mel domain)
    drawn per sample and per channel; an eval dataset with the same spec gets the plain spectrogram."""
    from dataclasses import replace

    aug = replace(SPEC, augment={"gain_db": 12.0})
    plain = one_epoch(VideoShardDataset(audio_set, PAIR, split="train", batch_size=2, seed=5, audio=SPEC))
    loud = one_epoch(VideoShardDataset(audio_set, PAIR, split="train", batch_size=2, seed=5, audio=aug))
    again = one_epoch(VideoShardDataset(audio_set, PAIR, split="train", batch_size=2, seed=5, audio=aug))
    gains = []
    for a, b, c in zip(plain, loud, again, strict=True):
        assert a["key"] == b["key"]
        torch.testing.assert_close(b["spectrogram"], c["spectrogram"], rtol=0, atol=0)  # per-sample generator
        for i in range(len(a["key"])):
            sound = a["spectrogram"][i] > 1.0  # bins loud enough for a ratio
            x, y = a["spectrogram"][i][sound].double(), b["spectrogram"][i][sound].double()
            db = 20 * torch.log10(torch.expm1(y) / torch.expm1(x))
            assert db.std() < 1e-2 and abs(float(db.mean())) <= 12.0 + 1e-2
            gains.append(float(db.mean()))
    assert max(gains) - min(gains) > 2.0  # a different gain per sample
    ev_plain = one_epoch(VideoShardDataset(audio_set, EVAL, split="train", batch_size=2, train=False,
                                           audio=replace(SPEC, view="e")))
    ev_aug = one_epoch(VideoShardDataset(audio_set, EVAL, split="train", batch_size=2, train=False,
                                         audio=replace(SPEC, view="e", augment={"gain_db": 12.0})))
    for a, b in zip(ev_plain, ev_aug, strict=True):
        torch.testing.assert_close(a["spectrogram"], b["spectrogram"], rtol=0, atol=0)
