"""One decoder interface over torchcodec, decord and PyAV, shared by the shard maker and the reader.

``open_video(data, backend="auto")`` takes the encoded bytes (or a path) and returns a
:class:`VideoReader`: a context manager with ``num_frames``, ``fps``, ``width``, ``height`` and
``get_frames(indices) -> uint8 tensor (N, H, W, 3)`` in the order asked for. ``auto`` tries the
backends in :func:`auto_order` (torchcodec when it loads, then decord, then PyAV; a backend the
sample's metadata names first) and falls back to the next one when a backend cannot open the video,
disagrees with the frame count the shard maker measured, or fails on the frames asked for.

Conventions: frame ``i`` is the ``i``-th frame a sequential decode of the first video stream outputs
(frames an mp4 edit list hides are not frames); frames are RGB uint8 whatever the pixel format
(10-bit, yuvj, 4:4:4 are converted); a rotation in the container's display matrix is **applied**, as
players do (a phone video shot in portrait comes out upright; ``np.rot90`` by the stream's rotation).

Rules every backend follows:

- only the frames asked for are decoded; each distinct index once, even when ``indices`` repeats
  or is unsorted (``np.unique`` + inverse gather);
- frame ``i`` is the ``i``-th frame in decode output order, never looked up by raw timestamp
  (PyAV: seek to the keyframe packet at or before the first index, number the decoder's output
  from that packet's decode-order position; valid for closed GOPs, which is what x264 writes);
- truncated, zero-length or garbage bytes and out-of-range indices raise :class:`DecodeError`
  (a :class:`~videossl.errors.VideosslError`) at open or at ``get_frames``; every handle is closed
  by ``close()`` / ``with``.
"""

from __future__ import annotations

import gc
import importlib.util
import io
import logging
import os
import resource
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from videossl.errors import VideosslError

log = logging.getLogger(__name__)

BACKENDS = ("torchcodec", "decord", "pyav")  # == tuple(_MODULES)


class DecodeError(VideosslError):
    """The bytes are not a decodable video, or a requested frame does not exist."""


_HAS: dict[str, bool] = {}


def _has(module: str) -> bool:
    # cached: find_spec walks sys.path (a dozen stat calls), and open_video asks once per clip
    if module not in _HAS:
        try:
            _HAS[module] = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            _HAS[module] = False
        if _HAS[module] and module == "torchcodec":  # installed is not enough: it loads the system FFmpeg
            try:
                importlib.import_module("torchcodec.decoders")
            except Exception as e:  # OSError / RuntimeError when libavcodec & co. are missing
                log.info("torchcodec is installed but does not load (%s): install the FFmpeg libraries", _short(e))
                _HAS[module] = False
    return _HAS[module]


#: backend -> the module it needs, in the order ``auto`` tries them (fastest first)
_MODULES = {"torchcodec": "torchcodec", "decord": "decord", "pyav": "av"}


def available_backends() -> list[str]:
    """Backends that load here, in the order ``backend="auto"`` tries them."""
    return [b for b, module in _MODULES.items() if _has(module)]


def auto_order(prefer: str | None = None) -> list[str]:
    """The backends ``auto`` tries, in order: ``prefer`` (e.g. the one the shard maker recorded) first."""
    have = available_backends()
    return ([prefer] if prefer in have else []) + [b for b in have if b != prefer]


def _check_indices(indices: Sequence[int] | np.ndarray | torch.Tensor, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.asarray(indices.cpu() if isinstance(indices, torch.Tensor) else indices, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= num_frames):
        bad = idx[(idx < 0) | (idx >= num_frames)]
        raise DecodeError(f"frame index {int(bad[0])} out of range: the video has {num_frames} frames (0..{num_frames - 1})")
    uniq, inverse = np.unique(idx, return_inverse=True)
    return uniq, inverse


class VideoReader:
    """Base class: subclasses implement ``_decode_sorted(unique_sorted_indices) -> (n, H, W, 3) uint8``."""

    backend = "?"
    num_frames: int
    fps: float
    width: int
    height: int

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return self.num_frames

    #: frames come back scaled by this factor (``open_video(..., scale=)``); None: the decoded size
    scale: float | None = None

    def output_hw(self) -> tuple[int, int]:
        """(H, W) of the frames :meth:`get_frames` returns: the display size, times :attr:`scale`."""
        return scaled_hw(self.height, self.width, self.scale)

    def get_frames(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
        """Frames at ``indices`` (any order, repeats allowed) as a uint8 tensor (N, H, W, 3).

        With a :attr:`scale`, at :meth:`output_hw`: scaled by the decoder where it does so in its own
        colour conversion (PyAV's swscale), otherwise by one antialiased resize of the decoded frames.
        """
        if self._closed:
            raise DecodeError(f"{self.backend} reader is closed")
        uniq, inverse = _check_indices(indices, self.num_frames)
        if uniq.size == 0:
            return torch.empty((0, *self.output_hw(), 3), dtype=torch.uint8)
        try:
            frames = self._decode_sorted(uniq)
        except DecodeError:
            raise
        except Exception as e:  # decoder libraries raise assorted types for corrupt data
            raise DecodeError(f"{self.backend}: cannot decode frames {uniq[:4].tolist()}...: {_short(e)}") from None
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise DecodeError(f"{self.backend}: decoded frames of shape {tuple(frames.shape)}, expected (N, H, W, 3)")
        if frames.shape[0] != uniq.size:
            raise DecodeError(f"{self.backend}: decoded {frames.shape[0]} of {uniq.size} requested frames (truncated video?)")
        t = torch.from_numpy(np.ascontiguousarray(frames))
        if self.scale is not None and tuple(t.shape[1:3]) != self.output_hw():
            t = resize_frames(t, self.output_hw())
        if inverse.size == uniq.size and np.array_equal(inverse, np.arange(uniq.size)):
            return t
        return t[torch.from_numpy(inverse)]

    def close(self) -> None:
        self._closed = True

    _closed = False

    def _decode_sorted(self, uniq: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.num_frames} frames, {self.fps:.3f} fps, {self.width}x{self.height})"


def scaled_hw(height: int, width: int, scale: float | None) -> tuple[int, int]:
    """``(height, width)`` times ``scale``, rounded (at least 1 px); unchanged without a scale."""
    if scale is None:
        return int(height), int(width)
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def resize_frames(frames: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(N, H, W, 3) uint8 → (N, h, w, 3) uint8, antialiased bilinear (torchvision's resize)."""
    import torchvision.transforms.v2.functional as F

    out = F.resize(frames.permute(0, 3, 1, 2), list(hw), antialias=True)
    return out.permute(0, 2, 3, 1).contiguous()


def _short(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def _as_source(data: bytes | bytearray | memoryview | str | os.PathLike) -> tuple[bytes | None, str | None]:
    if isinstance(data, bytes | bytearray | memoryview):
        b = bytes(data)
        if len(b) == 0:
            raise DecodeError("empty video data (zero-length member)")
        return b, None
    p = Path(data)
    if not p.is_file():
        raise DecodeError(f"video file {p} does not exist")
    if p.stat().st_size == 0:
        raise DecodeError(f"video file {p} is empty")
    return None, str(p)


# ----------------------------------------------------------------------------------------- decord
class DecordReader(VideoReader):
    """decord2's reader. Known defect (decord2 3.3/3.4 wheels, seen 2026-12): for some frame widths
    (e.g. 16, 24, 32, 48, 96 px: rows padded to 64-byte multiples) ``get_batch`` fails with "The size
    must exactly match" and single frames come back as (H, W, C≠3). Such a video is a
    :class:`DecodeError` naming the cause, or, with ``fallback=True`` (``backend="auto"``), is decoded
    by PyAV instead (same frames; a warning once per process)."""

    backend = "decord"

    def __init__(self, data: bytes | None, path: str | None, num_threads: int = 1, fallback: bool = False):
        import decord

        src = io.BytesIO(data) if data is not None else path
        try:
            self._vr = decord.VideoReader(src, ctx=decord.cpu(0), num_threads=num_threads)
        except Exception as e:
            raise DecodeError(f"decord cannot open the video: {_short(e)}") from None
        self.num_frames = len(self._vr)
        if self.num_frames <= 0:
            self.close()
            raise DecodeError("decord: the video has no frames")
        self.fps = float(self._vr.get_avg_fps())
        self._size: tuple[int, int] | None = None  # decord has no size getter: learnt from the first decode
        self._source, self._fallback, self._delegate = (data, path), bool(fallback), None
        self._num_threads = num_threads

    @property
    def height(self) -> int:  # type: ignore[override]
        return self._probe_size()[0]

    @property
    def width(self) -> int:  # type: ignore[override]
        return self._probe_size()[1]

    def _probe_size(self) -> tuple[int, int]:
        if self._size is None:
            if self._closed:
                raise DecodeError("decord reader is closed")
            self._decode_sorted(np.array([0]))
        return self._size

    def _decode_sorted(self, uniq: np.ndarray) -> np.ndarray:
        if self._delegate is not None:
            return self._delegate._decode_sorted(uniq)
        try:
            frames = self._vr.get_batch(uniq.tolist()).asnumpy()
            bad = frames.ndim != 4 or frames.shape[-1] != 3
        except Exception as e:
            if "must exactly match" not in str(e):
                raise
            bad = True
        if bad:
            return self._layout_defect(uniq)
        if self._size is None:
            self._size = (int(frames.shape[1]), int(frames.shape[2]))
        return frames

    def _layout_defect(self, uniq: np.ndarray) -> np.ndarray:
        global _DECORD_DEFECT_WARNED
        what = "decord returns wrongly shaped frames for this video (a decord2 row-padding defect)"
        if not (self._fallback and _has("av")):
            raise DecodeError(f"{what}: frame 0 comes back as {tuple(self._vr[0].shape)}; decode it with PyAV: "
                              "decoder 'pyav' or 'auto'")
        if not _DECORD_DEFECT_WARNED:
            log.warning("%s: decoding such videos with PyAV instead", what)
            _DECORD_DEFECT_WARNED = True
        self._delegate = PyAVReader(*self._source, num_threads=self._num_threads)
        frames = self._delegate._decode_sorted(uniq)
        self._size = (int(frames.shape[1]), int(frames.shape[2]))
        return frames

    def close(self) -> None:
        if not self._closed:
            self._vr = None
            if self._delegate is not None:
                self._delegate.close()
        super().close()


_DECORD_DEFECT_WARNED = False


# ------------------------------------------------------------------------------------------- PyAV
class PyAVReader(VideoReader):
    """Indexes packets once (demux only, no decode), then seeks to a keyframe per ``get_frames``."""

    backend = "pyav"

    def __init__(self, data: bytes | None, path: str | None, num_threads: int = 1):
        import av

        self._av = av
        self._data, self._path = data, path
        self._container = None
        try:
            self._container = self._open()
            if not self._container.streams.video:
                raise DecodeError("pyav: no video stream in the data")
            stream = self._container.streams.video[0]  # by position among the *video* streams
            self._coded = (int(stream.codec_context.height), int(stream.codec_context.width))
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            self.fps = float(rate) if rate else 0.0
            self._threads = num_threads
            stream.thread_type = "AUTO" if num_threads > 1 else "SLICE"
            stream.thread_count = num_threads
            # decode-order packet table: (pos, pts, keyframe); one packet = one frame for video. Packets an
            # edit list discards (e.g. negative pts) are decoded as references but output no frame.
            pos, key, pts = [], [], []
            for pkt in self._container.demux(stream):
                if pkt.size == 0 or pkt.dts is None and pkt.pts is None or pkt.is_discard:
                    continue
                pos.append(-1 if pkt.pos is None else int(pkt.pos))
                pts.append(pkt.pts if pkt.pts is not None else pkt.dts)
                key.append(bool(pkt.is_keyframe))
        except DecodeError:
            self.close()
            raise
        except Exception as e:
            self.close()
            raise DecodeError(f"pyav cannot open the video: {_short(e)}") from None
        self.num_frames = len(pos)
        if self.num_frames == 0:
            self.close()
            raise DecodeError("pyav: the video has no frames")
        meta = stream.frames
        if meta and meta != self.num_frames:
            log.debug("pyav: container says %d frames, demux found %d; using %d", meta, self.num_frames, self.num_frames)
        self._rotation: float | None = None  # learnt from the first decoded frame (PyAV has no stream getter)
        self._pos, self._pts, self._key = pos, pts, np.asarray(key)
        self._pos_to_order = {p: i for i, p in enumerate(pos) if p >= 0}
        if not self._key[0]:
            self._key[0] = True  # decoding always starts from the first packet when nothing else fits

    @property
    def height(self) -> int:  # type: ignore[override]
        return self._shape()[0]

    @property
    def width(self) -> int:  # type: ignore[override]
        return self._shape()[1]

    def _shape(self) -> tuple[int, int]:
        """(H, W) of the frames as returned: the coded size, swapped by a 90°/270° display rotation."""
        if self._rotation is None:
            if self._closed:
                raise DecodeError("pyav reader is closed")
            self._decode_sorted(np.array([0]))
        h, w = self._coded
        return (w, h) if int(round(self._rotation / 90)) % 2 else (h, w)

    def _open(self):
        src = io.BytesIO(self._data) if self._data is not None else self._path
        return self._av.open(src, mode="r", metadata_errors="ignore")

    def _decode_sorted(self, uniq: np.ndarray) -> np.ndarray:
        first = int(uniq[0])
        start = int(np.flatnonzero(self._key[: first + 1])[-1])  # last keyframe at or before `first`
        if start > 0:
            try:
                return self._decode_from(start, uniq, seek=True)
            except _SeekMissed:
                log.debug("pyav: seek to packet %d landed after it; decoding from the start", start)
        return self._decode_from(0, uniq, seek=False)

    def _decode_from(self, start: int, uniq: np.ndarray, seek: bool) -> np.ndarray:
        if not seek:  # reopen: cheaper and safer than seeking to 0 on odd files
            if self._container is not None:
                self._container.close()
            self._container = self._open()
            fresh = self._container.streams.video[0]
            fresh.thread_type = "AUTO" if self._threads > 1 else "SLICE"
            fresh.thread_count = self._threads
        c = self._container
        stream = c.streams.video[0]
        if seek:
            c.seek(int(self._pts[start]), stream=stream, backward=True, any_frame=False)  # also flushes the decoder
        wanted = set(uniq.tolist())
        last = int(uniq[-1])
        out: dict[int, np.ndarray] = {}
        order: int | None = None
        for pkt in c.demux(stream):
            if order is None:
                if pkt.size == 0:
                    continue
                # frames are numbered from the decode-order position of the first packet read
                order = self._pos_to_order.get(int(pkt.pos), None) if pkt.pos is not None else None
                if order is None:
                    order = start
                if order > int(uniq[0]):
                    raise _SeekMissed
            for frame in pkt.decode():
                if self._rotation is None:
                    self._rotation = float(frame.rotation or 0)
                if order in wanted:
                    out[order] = upright(self._rgb(frame), frame.rotation)
                order += 1
            if order > last:
                break
        if not out:
            h, w = scaled_hw(*self._coded, self.scale)
            return np.empty((0, h, w, 3), np.uint8)
        return np.stack([out[i] for i in uniq.tolist() if i in out])

    def _rgb(self, frame) -> np.ndarray:
        """The frame as RGB; with a scale, scaled by swscale in the same pass as the colour conversion."""
        if self.scale is None:
            return frame.to_ndarray(format="rgb24")
        h, w = scaled_hw(*self._coded, self.scale)  # coded orientation: the rotation is applied after
        return frame.to_ndarray(format="rgb24", width=w, height=h)

    def close(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # closing a half-open container must not raise
                pass
            self._container = None
        super().close()


class _SeekMissed(Exception):
    pass


def upright(img: np.ndarray, rotation: float | int | None) -> np.ndarray:
    """Apply a display-matrix rotation (degrees, counter-clockwise) as players and torchcodec do."""
    k = int(round((rotation or 0) / 90)) % 4
    return np.ascontiguousarray(np.rot90(img, k)) if k else img


# ------------------------------------------------------------------------------------- torchcodec
class TorchCodecReader(VideoReader):
    """torchcodec's decoder (exact seek mode: frame ``i`` is the ``i``-th frame in presentation order)."""

    backend = "torchcodec"

    def __init__(self, data: bytes | None, path: str | None, num_threads: int = 1):
        from torchcodec.decoders import VideoDecoder

        src = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data is not None else path
        try:
            self._dec = VideoDecoder(src, dimension_order="NHWC", num_ffmpeg_threads=num_threads, seek_mode="exact")
        except Exception as e:
            raise DecodeError(f"torchcodec cannot open the video: {_short(e)}") from None
        md = self._dec.metadata
        self.num_frames = int(md.num_frames or len(self._dec))
        self.fps = float(md.average_fps or 0.0)
        self.width, self.height = int(md.width), int(md.height)
        if int(round((getattr(md, "rotation", None) or 0) / 90)) % 2:  # torchcodec returns the frames rotated
            self.width, self.height = self.height, self.width

    def _decode_sorted(self, uniq: np.ndarray) -> np.ndarray:
        return self._dec.get_frames_at(uniq.tolist()).data.numpy()

    def close(self) -> None:
        self._dec = None
        super().close()


_READERS: dict[str, Callable[..., VideoReader]] = {
    "decord": DecordReader,
    "pyav": PyAVReader,
    "torchcodec": TorchCodecReader,
}


def open_video(
    data: bytes | bytearray | memoryview | str | os.PathLike,
    backend: str = "auto",
    *,
    num_threads: int = 1,
    expected_frames: int | None = None,
    prefer: str | None = None,
    scale: float | None = None,
) -> VideoReader:
    """Open encoded video bytes (or a file path) with ``backend`` (auto | torchcodec | decord | pyav).

    ``expected_frames`` is the frame count the shard maker measured (a sequential decode), ``prefer``
    the backend it found to read the video (the sample json's ``decoder``). A named backend is used as
    is: a video with fewer than half the expected frames is a :class:`DecodeError` (truncated), other
    differences are logged at debug level. ``auto`` returns an :class:`AutoReader` over
    :func:`auto_order`. ``scale`` (0 < scale <= 1) returns frames scaled by that factor
    (:meth:`VideoReader.get_frames`): decode-side downscaling for views much smaller than the frames.
    """
    if backend not in ("auto", *BACKENDS):
        raise VideosslError(f"unknown decoder backend {backend!r}: choose one of auto, {', '.join(BACKENDS)}")
    if scale is not None and not 0 < scale <= 1:
        raise VideosslError(f"decode scale must be in (0, 1], got {scale}")
    reader = _open(data, backend, num_threads, expected_frames, prefer)
    reader.scale = scale
    return reader


def _open(data, backend: str, num_threads: int, expected_frames: int | None, prefer: str | None) -> VideoReader:
    have = available_backends()
    if backend == "auto":
        if not have:
            raise VideosslError("no video decoder installed: pip install decord2 or av (or videossl[torchcodec])")
        return AutoReader(data, auto_order(prefer), num_threads=num_threads, expected_frames=expected_frames)
    if backend not in have:
        raise VideosslError(f"decoder backend {backend!r} is not installed here (available: {', '.join(have) or 'none'})")
    reader = _open_one(backend, data, num_threads)
    if expected_frames is not None and expected_frames > 0 and reader.num_frames != expected_frames:
        if reader.num_frames < expected_frames // 2:
            n = reader.num_frames
            reader.close()
            raise DecodeError(f"{backend}: found {n} frames but the metadata says {expected_frames} (truncated video)")
        log.debug("%s: %d frames, metadata says %d", backend, reader.num_frames, expected_frames)
    return reader


def _open_one(backend: str, data, num_threads: int) -> VideoReader:
    raw, path = _as_source(data)
    if backend == "decord":  # PyAV decodes what decord's row-padding defect gets wrong
        return DecordReader(raw, path, num_threads=num_threads, fallback="pyav" in available_backends())
    return _READERS[backend](raw, path, num_threads=num_threads)


class AutoReader(VideoReader):
    """The first backend of ``order`` that reads the video; the next one when it cannot.

    At open, a backend that fails, or whose frame count differs from ``expected_frames`` (the count of
    a sequential decode, measured when the shard was made), is passed over for the next one; when no
    backend agrees with ``expected_frames``, the first that opened is used. At ``get_frames``, a backend
    that fails on the frames asked for is replaced by the next one that reads them. Every failure is
    logged once per backend at info level; the error raised when none works names each backend's reason.
    """

    def __init__(self, data, order: Sequence[str], num_threads: int = 1, expected_frames: int | None = None):
        _as_source(data)  # empty bytes / missing file: one clear error before any backend
        self._data, self._threads, self._expected = data, num_threads, expected_frames
        self._order, self._errors = list(order), {}
        self._reader: VideoReader | None = None
        fallback: tuple[int, VideoReader] | None = None
        for i, b in enumerate(self._order):
            try:
                r = _open_one(b, data, num_threads)
            except DecodeError as e:
                self._errors[b] = str(e)
                continue
            if not expected_frames or r.num_frames == expected_frames:
                self._use(i, r)
                break
            self._errors[b] = f"{b}: {r.num_frames} frames, the shard maker decoded {expected_frames}"
            if fallback is None:
                fallback = (i, r)
            else:
                r.close()
        if self._reader is None:
            if fallback is None:
                raise DecodeError("no decoder reads this video: " + "; ".join(self._errors.values()))
            self._use(*fallback)
        elif fallback is not None:
            fallback[1].close()

    @property
    def scale(self) -> float | None:  # type: ignore[override]
        return self._scale

    @scale.setter
    def scale(self, value: float | None) -> None:  # the backend in use scales natively where it can
        self._scale = value
        if self._reader is not None:
            self._reader.scale = value

    _scale: float | None = None

    def _use(self, i: int, reader: VideoReader) -> None:
        if self._reader is not None and self._reader is not reader:
            self._reader.close()
        reader.scale = self._scale
        self._index, self._reader = i, reader
        self.backend = reader.backend
        self.num_frames = min(reader.num_frames, self._expected) if self._expected else reader.num_frames
        self.fps = reader.fps

    @property
    def width(self) -> int:  # type: ignore[override]
        return self._reader.width

    @property
    def height(self) -> int:  # type: ignore[override]
        return self._reader.height

    def _decode_sorted(self, uniq: np.ndarray) -> np.ndarray:
        try:
            return _checked(self._reader, uniq)
        except Exception as e:
            self._errors[self.backend] = _short(e)
        for i in range(self._index + 1, len(self._order)):
            b = self._order[i]
            try:
                r = _open_one(b, self._data, self._threads)
                frames = _checked(r, uniq)
            except Exception as e:
                self._errors[b] = _short(e)
                continue
            log.info("auto decoder: %s failed on this video; using %s", self.backend, b)
            self._use(i, r)
            return frames
        raise DecodeError("no decoder reads these frames: " + "; ".join(f"{k}: {v}" for k, v in self._errors.items()))

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        super().close()


def _checked(reader: VideoReader, uniq: np.ndarray) -> np.ndarray:
    frames = reader._decode_sorted(uniq)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] != uniq.size:
        raise DecodeError(f"{reader.backend}: decoded {frames.shape[0]} of {uniq.size} requested frames")
    return frames


def is_vfr(times: np.ndarray, tolerance: float = 0.01) -> bool:
    """Whether frame durations (``times``: presentation times in seconds) vary by more than ``tolerance``
    (relative) around their median: a variable-frame-rate video."""
    d = np.diff(np.asarray(times, dtype=np.float64))
    if d.size < 2 or (d <= 0).any():
        return False
    med = float(np.median(d))
    return bool(np.abs(d - med).max() > tolerance * med)


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure_rss_growth(
    data: bytes, backend: str = "auto", iterations: int = 300, indices: Sequence[int] | None = None, warmup: int = 20
) -> dict[str, float]:
    """Open/get/close ``data`` ``iterations`` times; report RSS before/after (for benchmarks, not a test).

    Returns ``{"rss_start_mb", "rss_end_mb", "growth_mb", "per_iter_kb", "iterations"}``; the start is
    taken after ``warmup`` iterations so that allocator warm-up is not counted as a leak.
    """

    def once() -> None:
        with open_video(data, backend) as r:
            idx = indices if indices is not None else np.linspace(0, r.num_frames - 1, min(8, r.num_frames)).astype(int)
            r.get_frames(idx)

    for _ in range(warmup):
        once()
    gc.collect()
    start = _rss_bytes()
    for _ in range(iterations):
        once()
    gc.collect()
    end = _rss_bytes()
    growth = (end - start) / 2**20
    return {
        "rss_start_mb": start / 2**20,
        "rss_end_mb": end / 2**20,
        "growth_mb": growth,
        "per_iter_kb": growth * 1024 / max(iterations, 1),
        "iterations": float(iterations),
    }
