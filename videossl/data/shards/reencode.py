"""Probing, checking and re-encoding one source file for make-shards.

* :func:`probe_video`: open with PyAV (first and last frame, demuxed packet count vs the header's);
* :func:`check_readable`: the contract "written ⇒ readable": the bytes that will be stored are decoded
  sequentially with PyAV (the reference: its frame count is what the sample's json records) and read
  through the reader's own :func:`~videossl.data.decoding.open_video` ``auto`` chain at the frames a
  sampler can ask for (first, a middle span, last); the backend that reads them is recorded;
* :func:`reencode_video`: H.264 re-encoding (short side, frame rate, keyframe interval, CRF, audio), also
  used for a file that no backend reads from its bytes (``reencode_unreadable``, which keeps the audio).

Audio when re-encoding with ``keep_audio``: the first audio stream becomes AAC at its own sample rate and
channel layout, each frame at its source time relative to the video stream's start (the video is
re-timed to start at 0), so an audio track that starts later than the video still sounds with the
same frames. Without ``keep_audio`` it is dropped, and the json's ``has_audio`` is false.
"""

from __future__ import annotations

import io
import math
import os
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from videossl.data.decoding import DecodeError, auto_order, is_vfr, open_video, upright
from videossl.errors import VideosslError

DEFAULT_KEYFRAME_INTERVAL = 16


class ProbeError(Exception):
    """A video that cannot be used; the message is the reason recorded in the manifest."""


def probe_video(src: str | os.PathLike | bytes) -> dict[str, Any]:
    """Open with PyAV, demux every video packet, decode the first frame and the last GOP.

    Returns ``fps, num_frames, width, height, duration, has_audio``; raises :class:`ProbeError`.
    """
    import av

    if isinstance(src, bytes | bytearray):
        if not src:
            raise ProbeError("empty video (0 bytes)")
        f: Any = io.BytesIO(src)
    else:
        try:
            size = os.path.getsize(src)
        except OSError as e:
            raise ProbeError(f"cannot read file: {e.strerror or e}") from None
        if size == 0:
            raise ProbeError("empty file (0 bytes)")
        f = str(src)
    try:
        container = av.open(f, metadata_errors="ignore")
    except Exception as e:  # noqa: BLE001 - any FFmpeg error is a reason, never a crash
        raise ProbeError(f"cannot open: {_err(e)}") from None
    try:
        video = next((s for s in container.streams if s.type == "video"), None)
        if video is None:
            raise ProbeError("no video stream")
        has_audio = any(s.type == "audio" for s in container.streams)
        ctx = video.codec_context
        n = 0
        first = None
        gop: list[Any] = []
        try:
            for pkt in container.demux(video):
                if pkt.size == 0 and pkt.dts is None:  # the end-of-stream flush packet, not a frame
                    continue
                n += 1  # a 0-byte packet inside the stream (AVI dropped frame) counts, but is not decoded
                if pkt.size == 0:
                    continue
                if first is None:
                    frames = ctx.decode(pkt)
                    if frames:
                        first = frames[0]
                if pkt.is_keyframe:
                    gop = [pkt]
                else:
                    gop.append(pkt)
            if first is None and n:
                frames = ctx.decode(None)
                first = frames[0] if frames else None
        except Exception as e:  # noqa: BLE001
            raise ProbeError(f"corrupt data after {n} packets: {_err(e)}") from None
        if n == 0 or first is None:
            raise ProbeError("no decodable video frame")
        if video.frames and n < video.frames:
            raise ProbeError(f"truncated: the header lists {video.frames} frames, only {n} can be read")
        try:
            ctx.flush_buffers()
            last = None
            for pkt in gop:
                for fr in ctx.decode(pkt):
                    last = fr
            for fr in ctx.decode(None):
                last = fr
        except Exception as e:  # noqa: BLE001
            raise ProbeError(f"last frame not decodable: {_err(e)}") from None
        if last is None:
            raise ProbeError("last frame not decodable")
        rate = video.average_rate or video.guessed_rate or video.base_rate
        fps = float(rate) if rate else 0.0
        if video.duration and video.time_base:
            duration = float(video.duration * video.time_base)
        elif container.duration:
            duration = container.duration / 1_000_000
        else:
            duration = n / fps if fps else 0.0
        if fps <= 0:
            fps = n / duration if duration > 0 else 0.0
        return {
            "fps": round(fps, 6),
            "num_frames": n,
            "width": int(first.width),
            "height": int(first.height),
            "duration": round(duration, 6),
            "has_audio": has_audio,
        }
    finally:
        container.close()


def _err(e: BaseException) -> str:
    msg = str(e).strip() or type(e).__name__
    msg = re.sub(r":\s*'[^']*'$", "", msg)  # PyAV appends the (absolute) file name; the manifest has it
    return " ".join(msg.split())[:300]


@dataclass(frozen=True)
class EncodeParams:
    reencode: bool = False
    short_side: int | None = None
    fps: float | None = None
    keyframe_interval: int = DEFAULT_KEYFRAME_INTERVAL
    crf: int = 23
    preset: str = "medium"
    keep_audio: bool = False
    reencode_unreadable: bool = True


def target_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(w, h) with the short side ``short_side`` (aspect kept) and both sizes even."""
    if short_side is None:
        return max(2, width - width % 2), max(2, height - height % 2)
    if width <= height:
        return short_side, max(2, int(round(height * short_side / width / 2)) * 2)
    return max(2, int(round(width * short_side / height / 2)) * 2), short_side


def reencode_video(path: str | os.PathLike, p: EncodeParams) -> bytes:
    """Decode ``path`` and encode H.264 yuv420p mp4 bytes as ``p`` asks (see the module docstring)."""
    import av

    buf = io.BytesIO()
    with av.open(str(path), metadata_errors="ignore") as inp:
        vin = inp.streams.video[0]
        vin.thread_type = "AUTO"
        ain = inp.streams.audio[0] if p.keep_audio and inp.streams.audio else None
        # the audio keeps its place against the video: times relative to the video stream's start
        v0 = float(vin.start_time * vin.time_base) if vin.start_time is not None and vin.time_base else 0.0
        src_rate = Fraction(vin.average_rate or vin.guessed_rate or vin.base_rate or 25)
        out_rate = Fraction(p.fps).limit_denominator(1001) if p.fps else src_rate.limit_denominator(1001)
        width, height = target_size(vin.codec_context.width, vin.codec_context.height, p.short_side)
        g = p.keyframe_interval
        # bitexact: no muxer version tag, so the bytes do not depend on which libavformat is loaded
        with av.open(buf, mode="w", format="mp4", options={"fflags": "+bitexact"}) as out:
            vout = out.add_stream("libx264", rate=out_rate)
            vout.width, vout.height, vout.pix_fmt = width, height, "yuv420p"
            vout.options = {
                "crf": str(p.crf),
                "preset": p.preset,
                "threads": "1",  # one process per file; single-threaded x264 is reproducible
                "x264-params": f"keyint={g}:min-keyint={g}:scenecut=0",
            }
            vout.codec_context.thread_count = 1
            aout = None
            if ain is not None:
                a_rate = ain.codec_context.sample_rate or 44100
                aout = out.add_stream("aac", rate=a_rate)
                if ain.codec_context.layout is not None and ain.codec_context.layout.nb_channels > 0:
                    aout.layout = ain.codec_context.layout.name  # mono stays mono (the default is stereo)
                aout.options = {"flags": "+bitexact"}  # no encoder version string in the AAC stream
                a_base, a_next = Fraction(1, a_rate), 0
            time_base = 1 / out_rate
            state = {"k": 0, "prev": None, "t0": None, "t_last": 0.0}

            def emit(frame: Any) -> None:
                vf = frame.reformat(width=width, height=height, format="yuv420p")
                vf.pts = state["k"]
                vf.time_base = time_base
                vf.pict_type = 0  # NONE: a decoded I frame would otherwise force an extra keyframe
                for pkt in vout.encode(vf):
                    out.mux(pkt)
                state["k"] += 1

            def slot(t: float) -> int:  # output frame index a source frame at time t lands in
                return int(math.floor(t * out_rate + 0.5))

            i_src = 0
            streams = [vin] + ([ain] if ain is not None else [])
            for packet in inp.demux(*streams):
                if packet.stream.type == "audio":
                    assert aout is not None
                    for af in packet.decode():
                        t = af.time  # seconds; a frame before the video's start gets a negative pts (edit list)
                        af.pts = int(round((t - v0) * a_rate)) if t is not None else a_next
                        af.time_base = a_base
                        a_next = af.pts + af.samples
                        for pkt in aout.encode(af):
                            out.mux(pkt)
                    continue
                for frame in packet.decode():
                    t = frame.time if frame.time is not None else i_src / float(src_rate)
                    i_src += 1
                    if state["t0"] is None:
                        state["t0"] = t
                    t -= state["t0"]
                    state["t_last"] = t
                    if p.fps is None:
                        emit(frame)
                        continue
                    if state["prev"] is not None:
                        while state["k"] < slot(t):
                            emit(state["prev"])
                    state["prev"] = frame
            if p.fps is not None and state["prev"] is not None:
                end = slot(state["t_last"] + 1 / float(src_rate))
                while state["k"] < end or state["k"] == 0:  # the last frame fills the rest of its duration
                    emit(state["prev"])
            for pkt in vout.encode():
                out.mux(pkt)
            if aout is not None:
                for pkt in aout.encode():
                    out.mux(pkt)
            if state["k"] == 0:
                raise ProbeError("re-encode produced no frames")
    return buf.getvalue()


def process_file(task: tuple[str, dict[str, Any]]) -> tuple:
    """Worker: probe (and re-encode) one file. Returns ``("ok", ext, data, meta)`` or ``("skip", reason)``.

    Never raises: any failure is a skip reason.
    """
    path, params = task
    p = EncodeParams(**params)
    try:
        meta = probe_video(path)
        if p.reencode:
            data, meta, ext = _reencoded(path, p)
        else:
            data, ext = Path(path).read_bytes(), container_ext(path)
        try:
            meta.update(check_readable(data))
        except ProbeError as e:
            if p.reencode or not p.reencode_unreadable:
                raise ProbeError(f"stored bytes unreadable: {e}") from None
            # no backend reads the original bytes: store an H.264 re-encode (from the file, with PyAV)
            fix = EncodeParams(reencode=True, keyframe_interval=p.keyframe_interval, crf=p.crf, preset=p.preset,
                               keep_audio=True)  # the original bytes would have kept it
            data, meta, ext = _reencoded(path, fix)
            meta.update(check_readable(data), reencoded=f"the original bytes were unreadable: {e}")
        return ("ok", ext, data, meta)
    except ProbeError as e:
        return ("skip", str(e))
    except Exception as e:  # noqa: BLE001 - a worker never crashes the run
        return ("skip", f"{type(e).__name__}: {_err(e)}")


def _reencoded(path: str, p: EncodeParams) -> tuple[bytes, dict[str, Any], str]:
    try:
        data = reencode_video(path, p)
    except ProbeError:
        raise
    except Exception as e:  # noqa: BLE001
        raise ProbeError(f"re-encode failed: {_err(e)}") from None
    try:
        meta = probe_video(data)
    except ProbeError as e:
        raise ProbeError(f"re-encoded video does not decode: {e}") from None
    return data, meta, "mp4"


def _sequential(data: bytes, keep: set[int] | None = None) -> tuple[int, dict[int, Any], list[float | None]]:
    """(frames a sequential PyAV decode of the first video stream outputs, {index: frame} for ``keep``,
    each frame's presentation time in seconds)."""
    import av

    n, kept, times = 0, {}, []
    with av.open(io.BytesIO(data), metadata_errors="ignore") as c:
        for frame in c.decode(video=0):
            if keep is not None and n in keep:
                kept[n] = upright(frame.to_ndarray(format="rgb24"), frame.rotation)
            times.append(frame.time)
            n += 1
    return n, kept, times


def check_indices(n: int, span: int = 4) -> list[int]:
    """The frames a sampler can ask for, checked by make-shards and ``videossl data verify``: the first,
    a middle span of ``span`` frames and the last."""
    mid = max(0, n // 2 - span // 2)
    return sorted({0, *range(mid, min(n, mid + span)), n - 1})


def check_readable(data: bytes) -> dict[str, Any]:
    """The contract "what is stored can be read": ``{"decoded_frames", "decoder"}`` or :class:`ProbeError`.

    ``decoded_frames`` comes from a sequential PyAV decode of ``data``; a backend of the reader's ``auto``
    chain (:func:`~videossl.data.decoding.auto_order`, tried in order) must open ``data`` with that frame
    count and return the same frames (mean abs error ≤ 1 grey level) at :func:`check_indices`. ``decoder``
    is the first that does (the reader tries it first); e.g. torchcodec's seeks land on other frames when
    an mp4's timestamps are broken, and decord ignores edit lists.
    """
    try:
        n, _, times = _sequential(data)
    except Exception as e:  # noqa: BLE001 - any library error is a reason
        raise ProbeError(f"a sequential decode fails: {_err(e)}") from None
    vfr = None not in times and is_vfr(np.asarray(times, dtype=np.float64))
    if n == 0:
        raise ProbeError("a sequential decode yields no frame")
    idx = check_indices(n)
    _, ref, _ = _sequential(data, set(idx))
    reasons = []
    for backend in auto_order():  # the first backend of the reader's chain that reads it right is recorded
        try:
            with open_video(data, backend, expected_frames=n) as r:
                if r.num_frames != n:
                    raise DecodeError(f"counts {r.num_frames} frames, a sequential decode {n}")
                got = r.get_frames(idx).numpy()
        except DecodeError as e:
            reasons.append(f"{backend}: {str(e)[:120]}")
            continue
        bad = [i for j, i in enumerate(idx) if got[j].shape != ref[i].shape
               or float(np.abs(got[j].astype(np.int16) - ref[i].astype(np.int16)).mean()) > 1.0]
        if not bad:
            out = {"decoded_frames": n, "decoder": backend}
            if vfr:  # the reader samples views at a target rate by these times (sampling.retime)
                out["frame_times"] = [round(float(t), 4) for t in times]
            return out
        reasons.append(f"{backend}: other pixels than a sequential decode at frame {bad[0]}")
    raise ProbeError("no backend of the reader reads it like a sequential decode (" + "; ".join(reasons) + ")")


def container_ext(path: str | os.PathLike) -> str:
    ext = os.path.splitext(str(path))[1].lower().lstrip(".")
    return ext if ext.isalnum() and ext != "json" else "mp4"


def encode_params(short_side: int | None, fps: float | None, keyframe_interval: int | None, crf: int, preset: str,
                  keep_audio: bool, reencode: bool | None, reencode_unreadable: bool = True) -> EncodeParams:
    """Checked re-encoding parameters; ``reencode`` None: re-encode iff a size, rate or keyframe interval is set."""
    if short_side is not None and (short_side < 2 or short_side % 2):
        raise VideosslError(f"--short-side must be an even number (H.264 yuv420p), got {short_side}")
    if fps is not None and not fps > 0:
        raise VideosslError(f"--fps must be positive, got {fps}")
    if keyframe_interval is not None and keyframe_interval < 1:
        raise VideosslError(f"--keyframe-interval must be at least 1, got {keyframe_interval}")
    if not 0 <= crf <= 51:
        raise VideosslError(f"--crf must be in 0..51, got {crf}")
    asked = any(v is not None for v in (short_side, fps, keyframe_interval))
    do_reencode = bool(reencode) if reencode is not None else asked
    if not do_reencode and asked:
        raise VideosslError("--short-side/--fps/--keyframe-interval need re-encoding (reencode=False was given)")
    return EncodeParams(reencode=do_reencode, short_side=short_side, fps=fps,
                        keyframe_interval=keyframe_interval or DEFAULT_KEYFRAME_INTERVAL, crf=crf, preset=preset,
                        keep_audio=keep_audio, reencode_unreadable=reencode_unreadable)
