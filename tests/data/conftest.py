"""Tiny generated videos and shard sets for the data tests (all encoded with PyAV/libx264)."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest

from videossl.data.shards.format import SplitWriter, build_manifest, json_bytes, write_manifest


def frame_pattern(i: int, h: int, w: int) -> np.ndarray:
    """Frame ``i``: a smooth pattern whose red level encodes ``i`` (so frames are told apart)."""
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = (i * 9) % 256
    img[..., 1] = (np.arange(w)[None, :] * 255 // max(w - 1, 1)).astype(np.uint8)
    img[..., 2] = (np.arange(h)[:, None] * 255 // max(h - 1, 1)).astype(np.uint8)
    img[h // 4 : h // 2, (i * 2) % w : (i * 2) % w + 4, :] = 255
    return img


def encode_mp4(
    num_frames: int = 24,
    width: int = 64,
    height: int = 48,
    fps: int = 25,
    gop: int = 8,
    bframes: int = 2,
    frames: list[np.ndarray] | None = None,
    path: str | Path | None = None,
) -> bytes:
    """H.264 mp4 bytes (yuv420p, fixed GOP, B-frames); with ``path`` written there (moov in front)."""
    target = str(path) if path is not None else io.BytesIO()
    opts = {"movflags": "+faststart"} if path is not None else {}
    with av.open(target, "w", format="mp4", options=opts) as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.options = {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0", "crf": "16", "bf": str(bframes),
                     "preset": "veryfast"}
        for i in range(num_frames):
            img = frames[i] if frames is not None else frame_pattern(i, height, width)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return Path(path).read_bytes() if path is not None else target.getvalue()


def pyav_decode_all(data: bytes) -> np.ndarray:
    """Every frame in decode output order (the naive reference decoder)."""
    with av.open(io.BytesIO(data)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def sample_meta(key: str, label: int, split: str, n: int, fps: int = 25, w: int = 64, h: int = 48) -> dict:
    return {
        "key": key, "label": label, "label_name": f"c{label}", "split": split, "fps": fps,
        "num_frames": n, "width": w, "height": h, "duration": n / fps, "source": f"{key}.mp4",
    }


def make_shard_set(
    out: Path,
    splits: dict[str, int],
    per_shard: int = 4,
    num_classes: int = 3,
    frames=(20, 28),
    bad: dict[str, dict[str, bytes | None]] | None = None,
    size=(64, 48),
) -> dict:
    """A shard set with ``splits[name]`` samples each; ``bad[key] = members`` replaces a sample's members
    (``None`` value: drop that member). Returns the manifest. Videos are cached by length."""
    out.mkdir(parents=True, exist_ok=True)
    cache: dict[int, bytes] = {}
    shard_lists, labels = {}, {}
    for split, count in splits.items():
        w = SplitWriter(out, split, max_count=per_shard)
        labels[split] = []
        for i in range(count):
            key = f"{split}{i:04d}"
            n = int(frames[0] + (i * 5) % (frames[1] - frames[0] + 1))
            if n not in cache:
                cache[n] = encode_mp4(n, size[0], size[1])
            label = i % num_classes
            meta = json_bytes(sample_meta(key, label, split, n, w=size[0], h=size[1]))
            members: dict[str, bytes | None] = {"mp4": cache[n], "json": meta}
            members["mask.npy"] = _npy(np.full((2, 2), i, np.uint8))
            if bad and key in bad:
                members.update(bad[key])
            w.write(key, {k: v for k, v in members.items() if v is not None})
            labels[split].append(label)
        shard_lists[split] = w.close()
    manifest = build_manifest(
        kind="test", classes=[f"c{i}" for i in range(num_classes)], splits=shard_lists,
        labels_per_split=labels, params={"fps": 25}, video={"width": size[0], "height": size[1]},
    )
    write_manifest(out, manifest)
    return manifest


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


@pytest.fixture(scope="session")
def mp4_bytes() -> bytes:
    return encode_mp4(40, 64, 48, gop=8, bframes=2)


@pytest.fixture(scope="session")
def mp4_reference(mp4_bytes) -> np.ndarray:
    return pyav_decode_all(mp4_bytes)


@pytest.fixture(scope="session")
def shard_set(tmp_path_factory) -> Path:
    """train: 24 samples in 6 shards of 4; val: 10 samples in 3 shards (4, 4, 2)."""
    d = tmp_path_factory.mktemp("shards")
    make_shard_set(d, {"train": 24, "val": 10})
    return d


@pytest.fixture(scope="session")
def make_mp4():
    """``encode_mp4`` as a fixture (test modules cannot import conftest reliably)."""
    return encode_mp4


@pytest.fixture(scope="session")
def make_shards():
    return make_shard_set


@pytest.fixture(scope="session")
def decode_all():
    return pyav_decode_all
