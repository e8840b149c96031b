"""Reader (and writer, for tests and exports) of TAP-Vid's published pickle files (Doersch et al., arXiv:2211.03726,
§4; the layout is the one the tapnet repository's README documents for its downloads).

* **DAVIS** (``tapvid_davis.pkl``): a ``dict`` video name → ``{"video", "points", "occluded"}``;
* **RGB-Stacking** (``tapvid_rgb_stacking.pkl``) and **Kinetics** (``NNNN_of_NNNN.pkl``, written by tapnet's
  ``generate_tapvid.py``): a ``list`` of the same dicts, without names (named ``<file stem>-<index>`` here);
* ``video``: (T, H, W, 3) uint8, or a sequence of T encoded images (JPEG/PNG bytes, as in the Kinetics files);
  ``points``: (N, T, 2) float, (x, y) **normalised to [0, 1]** over the frame's extent; ``occluded``: (N, T) bool.

Reading needs no TensorFlow: :mod:`pickle`, numpy and (for encoded frames) Pillow. A pickle runs code when
it is loaded: read only files you trust (the published ones).
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from videossl.errors import VideosslError

__all__ = ["TapVideo", "read_tapvid_pickle", "write_tapvid_pickle"]


@dataclass
class TapVideo:
    """One TAP-Vid video: ``frames`` (T, H, W, 3) uint8, ``points`` (N, T, 2) (x, y) in [0, 1], ``occluded`` (N, T)."""

    name: str
    frames: np.ndarray
    points: np.ndarray
    occluded: np.ndarray

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


def _decode_frames(video, where: str) -> np.ndarray:
    if isinstance(video, np.ndarray) and video.dtype == np.uint8 and video.ndim == 4:
        return video
    if isinstance(video, list | tuple | np.ndarray) and len(video) and isinstance(video[0], bytes | bytearray):
        from PIL import Image

        return np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in video])
    raise VideosslError(f"{where}: 'video' is neither a (T, H, W, 3) uint8 array nor a list of encoded frames")


def _video(entry, name: str, where: str) -> TapVideo:
    if not isinstance(entry, dict) or not {"video", "points", "occluded"} <= set(entry):
        have = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise VideosslError(f"{where}: entry {name!r} is not a TAP-Vid video (needs video, points, occluded; has {have})")
    frames = _decode_frames(entry["video"], f"{where} [{name}]")
    points = np.asarray(entry["points"], np.float32)
    occ = np.asarray(entry["occluded"], bool)
    T = frames.shape[0]
    if points.ndim != 3 or points.shape[1:] != (T, 2) or occ.shape != points.shape[:2]:
        raise VideosslError(f"{where} [{name}]: points {points.shape} / occluded {occ.shape} do not fit {T} frames "
                            "(expected (N, T, 2) and (N, T))")
    return TapVideo(name, frames, points, occ)


def read_tapvid_pickle(path: str | os.PathLike) -> Iterator[TapVideo]:
    """Every video of a TAP-Vid pickle (DAVIS dict or RGB-Stacking / Kinetics list), in file order."""
    path = Path(path)
    if not path.is_file():
        raise VideosslError(f"{path} does not exist (a TAP-Vid pickle: tapvid_davis.pkl, tapvid_rgb_stacking.pkl, ...)")
    try:
        with open(path, "rb") as f:
            data = pickle.load(f)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as e:
        raise VideosslError(f"{path} is not a readable pickle: {e}") from None
    if isinstance(data, dict):
        items = list(data.items())
    elif isinstance(data, list | tuple):
        items = [(f"{path.stem}-{i:04d}", v) for i, v in enumerate(data)]
    else:
        raise VideosslError(f"{path}: a TAP-Vid pickle holds a dict (DAVIS) or a list (RGB-Stacking, Kinetics), "
                            f"not {type(data).__name__}")
    for name, entry in items:
        yield _video(entry, str(name), str(path))


def write_tapvid_pickle(path: str | os.PathLike, videos: list[TapVideo], named: bool = True,
                        encode_jpeg: bool = False) -> Path:
    """Write ``videos`` in the published layout: a dict by name (``named``, DAVIS) or a list (RGB-Stacking /
    Kinetics); with ``encode_jpeg`` the frames are a list of JPEG bytes (as in the Kinetics files)."""
    def entry(v: TapVideo) -> dict:
        video = v.frames
        if encode_jpeg:
            from PIL import Image

            frames = []
            for fr in v.frames:
                buf = io.BytesIO()
                Image.fromarray(fr).save(buf, format="JPEG", quality=95)
                frames.append(buf.getvalue())
            video = frames
        return {"video": video, "points": np.asarray(v.points, np.float32), "occluded": np.asarray(v.occluded, bool)}

    data = {v.name: entry(v) for v in videos} if named else [entry(v) for v in videos]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(data, f)
    return path
