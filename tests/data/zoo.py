"""A "decoder zoo": tiny video files in the formats real collections hold, generated offline with PyAV.

``make_zoo(folder)`` writes one small file per format (H.264 profiles / GOP layouts, HEVC in mp4 and mov,
MPEG-4 part 2 and MJPEG in AVI, VP8/VP9 in WebM, AV1, audio-first and two-video-stream containers,
rotation metadata, variable frame rate, odd sizes, a single frame, 4:4:4 and 10-bit, a truncated file,
random bytes, and an H.264 stream whose packets carry pts == dts despite B-frames) and returns a
``ZooClip`` for each one. Clips whose encoder this PyAV build lacks are left out (and, if a ``skipped``
list is passed, named there with the reason).

``reference_decode(path)`` is the reference every backend is compared with: the first video stream,
decoded sequentially from the start with PyAV, every frame the decoder outputs, as RGB24, in output
order. Every clip's ``frames`` is measured with it on the written file, never assumed.

Notes on what was managed (PyAV 18 / its bundled FFmpeg):

* ``rotated.mp4`` carries a real display matrix (``VideoStream.set_display_rotation(90)``, written by the
  mov muxer as ``AV_PKT_DATA_DISPLAYMATRIX`` side data); the ``rotate`` metadata tag is set as well, which
  modern FFmpeg muxers ignore. The reference is the frames as stored (not rotated).
* ``pts_eq_dts_bframes.mp4``: the mp4 muxer accepts the rewritten timestamps (pts == dts is strictly
  increasing), so no mkv fallback is needed; if it ever refuses, the clip is written as
  ``pts_eq_dts_bframes.mkv`` instead. The first two packets in decode order (the I-frame and the first P-frame,
  display frames 0 and 3) now carry negative pts, so the mp4 demuxer marks them discard (the edit list
  starts at 0): they are decoded as references but not output, and the reference decode yields 22 of the
  24 encoded frames (display frames 1, 2, 4, 5, ..., 23, in display order; their pts are out of order).
* ``truncated.mp4`` is written with ``movflags=+faststart`` (moov in front) and cut halfway through the
  packet stored in the middle of the data; its sample table still lists every frame, the demuxer hands the
  decoder a short last packet (rejected: ``InvalidDataError``) and then finds no more data, so the
  reference (which skips rejected packets, as ``ffmpeg`` does) yields a prefix.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

FPS = 25

# Single-threaded encoders, bit-exact muxers: the same bytes on every run. With x264's macroblock-tree rate
# control on, single-threaded x264 gave different bytes for the same input from one encode to the next in the
# same process at these tiny sizes (seemingly stale heap memory from an earlier encoder instance); mbtree=0
# (or asm=0, or constant qp) made it repeatable, so it is turned off; everything else stays at the defaults.
_X264 = {"threads": "1", "preset": "veryfast"}
_X264_PARAMS = "mbtree=0"
_X265_PARAMS = "log-level=none:pools=none:frame-threads=1"
_MUX = {"fflags": "+bitexact"}


@dataclass(frozen=True)
class ZooClip:
    name: str  # e.g. "h264_high_longgop.mp4"
    path: Path
    kind: str  # short description, e.g. "H.264 high profile, B-frames, mp4"
    expect: str  # "readable" | "partial" (truncated tail: readable prefix) | "unreadable"
    frames: int  # frames a sequential PyAV decode of the file yields (the reference count); 0 if unreadable
    width: int = 0  # stored (coded display) size of the first video stream; 0 if unreadable
    height: int = 0
    note: str = ""  # anything a reader of a decoder matrix should know (what was managed, fallbacks)


def displayed(path: Path, frames: np.ndarray) -> np.ndarray:
    """``frames`` as a player shows them: rotated by the stream's display-matrix rotation (videossl's convention)."""
    with av.open(str(path)) as container:
        rotation = next(container.decode(video=0)).rotation or 0
    k = int(round(rotation / 90)) % 4
    return np.ascontiguousarray(np.rot90(frames, k, axes=(1, 2))) if k else frames


def reference_decode(path: Path) -> np.ndarray:
    """(N, H, W, 3) uint8: the first video stream decoded sequentially with PyAV, every output frame, RGB24.

    Packets are demuxed from the start and decoded in file order; the frames come out in the decoder's
    output order. Like the ``ffmpeg`` command line, a packet the decoder rejects (the cut-off last packet
    of a truncated file) is skipped and a demuxer error ends the stream, after which the decoder is flushed,
    so a damaged file yields its readable prefix. Raises (``av.error.FFmpegError`` or ``ValueError``) when
    the file cannot be opened, has no video stream, or yields no frame at all.
    """
    out: list[np.ndarray] = []
    first_error: Exception | None = None
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path}: no video stream")
        stream = container.streams.video[0]
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError as e:  # a demuxer error: the stream ends here
                first_error = first_error or e
                break
            try:
                frames = packet.decode()  # the final empty packet flushes the decoder
            except av.error.FFmpegError as e:
                first_error = first_error or e
                continue
            out.extend(f.to_ndarray(format="rgb24") for f in frames)
        if first_error is not None:  # the demuxer's flush packet may not have come: drain what is buffered
            try:
                out.extend(f.to_ndarray(format="rgb24") for f in stream.decode(None))
            except av.error.FFmpegError:
                pass
    if not out:
        if first_error is not None:
            raise first_error
        raise ValueError(f"{path}: no frame decoded")
    return np.stack(out)


# ----------------------------------------------------------------------------------------------- content


def pattern(i: int, w: int, h: int, seed: int) -> np.ndarray:
    """Frame ``i`` of clip ``seed``: a drifting sine texture over a gradient, a moving square, a frame-coded tint.

    Smooth enough to survive lossy codecs, different in every frame (texture phase, square position and
    red level all move with ``i``) and different per clip (``seed`` picks colours, speed and square size).
    """
    rng = np.random.default_rng(seed)
    base = rng.uniform(40, 200, size=3)
    freq = rng.uniform(0.15, 0.35, size=2)
    speed = int(rng.integers(1, 4))
    side = int(rng.integers(6, 12))
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    tex = 35 * np.sin(freq[0] * (x + 1.5 * i)) * np.cos(freq[1] * (y - 0.7 * i))
    img = np.empty((h, w, 3), np.float32)
    img[..., 0] = base[0] + tex + (i * 7) % 50
    img[..., 1] = base[1] + 60 * (x / max(w - 1, 1) - 0.5) - 0.5 * tex
    img[..., 2] = base[2] + 60 * (y / max(h - 1, 1) - 0.5) + 0.3 * tex
    img = np.clip(img, 0, 255).astype(np.uint8)
    sx = (speed * 2 * i) % max(w - side, 1)
    sy = (h // 3 + int(round(6 * math.sin(i / 3)))) % max(h - side, 1)
    img[sy : sy + side, sx : sx + side] = (250, 250, 250)
    return img


def _has_encoder(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except Exception:
        return False
    return True


# ---------------------------------------------------------------------------------------------- writing


def _add_video(
    c,
    codec: str,
    w: int,
    h: int,
    *,
    pix_fmt: str = "yuv420p",
    options: dict | None = None,
    bit_rate: int | None = None,
    time_base: Fraction | None = None,
):
    s = c.add_stream(codec, rate=FPS)
    s.width, s.height, s.pix_fmt = w, h, pix_fmt
    if time_base is not None:
        s.codec_context.time_base = time_base
        s.time_base = time_base
    if bit_rate is not None:
        s.bit_rate = bit_rate
    opts = dict(_X264) if codec == "libx264" else {}
    if codec == "libx265":
        opts["x265-params"] = _X265_PARAMS
    opts.update(options or {})
    if codec == "libx264":
        opts["x264-params"] = ":".join(filter(None, (_X264_PARAMS, opts.get("x264-params"))))
    s.options = opts
    return s


def _frame(img: np.ndarray, pts: int, pix_fmt: str, time_base: Fraction | None = None) -> av.VideoFrame:
    f = av.VideoFrame.from_ndarray(img, format="rgb24")
    if pix_fmt != "rgb24":
        f = f.reformat(format=pix_fmt)
    f.pts = pts
    if time_base is not None:
        f.time_base = time_base
    return f


def _encode(
    path: Path,
    codec: str,
    w: int,
    h: int,
    n: int,
    seed: int,
    *,
    fmt: str | None = None,
    pix_fmt: str = "yuv420p",
    options: dict | None = None,
    bit_rate: int | None = None,
    container_options: dict | None = None,
    setup: Callable | None = None,
    pts: list[int] | None = None,
    time_base: Fraction | None = None,
) -> None:
    """Encode ``n`` pattern frames with one video stream into ``path`` (or a BytesIO)."""
    target = path if isinstance(path, io.BytesIO) else str(path)
    with av.open(target, "w", format=fmt, options={**_MUX, **(container_options or {})}) as c:
        s = _add_video(c, codec, w, h, pix_fmt=pix_fmt, options=options, bit_rate=bit_rate, time_base=time_base)
        if setup is not None:
            setup(s)
        for i in range(n):
            f = _frame(pattern(i, w, h, seed), pts[i] if pts else i, pix_fmt, time_base)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def _write_audio_first(path: Path, w: int, h: int, n: int, seed: int) -> None:
    """AAC stream added first (index 0), H.264 second (index 1); ~2 s of a 440 Hz tone, interleaved."""
    sr = 16000
    with av.open(str(path), "w", format="mp4", options=_MUX) as c:
        a = c.add_stream("aac", rate=sr)
        a.layout = "mono"
        v = _add_video(c, "libx264", w, h, options={"bf": "2", "g": "12"})
        total = 2 * sr
        per_frame = max(total // n, 1)
        t0 = 0
        for i in range(n):
            for p in v.encode(_frame(pattern(i, w, h, seed), i, "yuv420p")):
                c.mux(p)
            t1 = total if i == n - 1 else min(t0 + per_frame, total)
            if t1 > t0:
                t = np.arange(t0, t1) / sr
                arr = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
                af = av.AudioFrame.from_ndarray(arr, format="fltp", layout="mono")
                af.sample_rate, af.pts = sr, t0
                for p in a.encode(af):
                    c.mux(p)
            t0 = t1
        for p in v.encode():
            c.mux(p)
        for p in a.encode():
            c.mux(p)


def _write_two_video(path: Path, w: int, h: int, n: int, seed: int) -> None:
    """Two H.264 video streams of different content (different seeds); the first is the reference."""
    with av.open(str(path), "w", format="matroska", options=_MUX) as c:
        s0 = _add_video(c, "libx264", w, h, options={"bf": "2", "g": "12"})
        s1 = _add_video(c, "libx264", w, h, options={"bf": "0", "g": "6"})
        for i in range(n):
            for s, sd in ((s0, seed), (s1, seed + 1000)):
                for p in s.encode(_frame(pattern(i, w, h, sd), i, "yuv420p")):
                    c.mux(p)
        for s in (s0, s1):
            for p in s.encode():
                c.mux(p)


def _write_pts_eq_dts(folder: Path, w: int, h: int, n: int, seed: int) -> tuple[Path, str]:
    """H.264 with B-frames remuxed with every packet's pts := dts (a broken remux). mp4, else mkv."""
    src = io.BytesIO()
    _encode(src, "libx264", w, h, n, seed, fmt="mp4", options={"bf": "2", "g": "12", "b_strategy": "0"})  # mp4 keeps dts
    errors = []
    for fmt, name in (("mp4", "pts_eq_dts_bframes.mp4"), ("matroska", "pts_eq_dts_bframes.mkv")):
        path = folder / name
        try:
            src.seek(0)
            with av.open(src, "r") as inp, av.open(str(path), "w", format=fmt, options=_MUX) as out:
                ins = inp.streams.video[0]
                o = out.add_stream_from_template(ins)
                for p in inp.demux(ins):
                    if p.dts is None and p.pts is None:  # the demuxer's flush packet
                        continue
                    p.pts = p.dts
                    p.stream = o
                    out.mux(p)
            return path, "; ".join(errors + [f"{fmt} muxer accepted pts := dts"])
        except Exception as e:  # the muxer refused the timestamps: try the next container
            errors.append(f"{fmt} refused: {type(e).__name__}: {e}")
            path.unlink(missing_ok=True)
    raise RuntimeError("; ".join(errors))


# ------------------------------------------------------------------------------------------------- zoo


def _measure(path: Path) -> tuple[int, int, int]:
    """(frames, width, height) of ``reference_decode``; (0, 0, 0) when it raises."""
    try:
        arr = reference_decode(path)
    except Exception:
        return 0, 0, 0
    return arr.shape[0], arr.shape[2], arr.shape[1]


def make_zoo(folder: Path, size=(64, 48), frames=24, skipped: list | None = None) -> list[ZooClip]:
    """Write the zoo into ``folder`` and return one ``ZooClip`` per file (deterministic; fixed seeds).

    ``size`` is (width, height) for the clips that don't need a particular size; ``frames`` the frame count
    written for each clip (``one_frame.mp4`` writes 1). Clips whose encoder is missing are left out and,
    if ``skipped`` is a list, ``(name, reason)`` is appended to it.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    w, h = size
    n = frames
    clips: list[ZooClip] = []

    def skip(name: str, why: str) -> None:
        if skipped is not None:
            skipped.append((name, why))

    def add(name: str, kind: str, path: Path | None = None, expect: str | None = None, note: str = "") -> None:
        path = path or folder / name
        got, fw, fh = _measure(path)
        if expect is None:
            expect = "readable" if got else "unreadable"
        clips.append(ZooClip(path.name, path, kind, expect, got, fw, fh, note))

    def simple(name: str, kind: str, codec: str, seed: int, *, note: str = "", needs: tuple = (), **kw) -> None:
        for enc in (codec, *needs):
            if not _has_encoder(enc):
                skip(name, f"encoder {enc} missing in this PyAV build")
                return
        kw.setdefault("w", w)
        kw.setdefault("h", h)
        kw.setdefault("n", n)
        try:
            _encode(folder / name, codec, seed=seed, **kw)
        except Exception as e:
            (folder / name).unlink(missing_ok=True)
            skip(name, f"encoding failed: {type(e).__name__}: {e}")
            return
        add(name, kind, note=note)

    x264 = _has_encoder("libx264")

    # --- H.264 profiles and GOP layouts
    simple("h264_baseline.mp4", "H.264 baseline profile, no B-frames, mp4", "libx264", 1,
           options={"profile": "baseline", "bf": "0", "g": "12"})
    simple("h264_main_bframes.mp4", "H.264 main profile, 2 B-frames, mp4", "libx264", 2,
           options={"profile": "main", "bf": "2", "g": "12"})
    simple("h264_high_longgop.mp4", "H.264 high profile, 3 B-frames, one GOP (g=250), mp4", "libx264", 3,
           options={"profile": "high", "bf": "3", "g": "250", "x264-params": "keyint=250:min-keyint=250:scenecut=0"})
    simple("h264_open_gop.mkv", "H.264 high, open GOP (keyint=8), 3 B-frames, mkv", "libx264", 4,
           options={"profile": "high", "bf": "3", "x264-params": "open-gop=1:keyint=8:min-keyint=8:scenecut=0"})

    # --- HEVC
    simple("hevc.mp4", "HEVC (x265) main, mp4", "libx265", 5)

    def hvc1(s) -> None:
        s.codec_tag = "hvc1"

    simple("hevc.mov", "HEVC (x265) in QuickTime .mov, hvc1 tag (phone footage)", "libx265", 6, setup=hvc1)

    # --- older codecs in AVI (UCF101 / HMDB style)
    simple("mpeg4_part2.avi", "MPEG-4 part 2 (DivX/XviD style), AVI", "mpeg4", 7, bit_rate=600_000,
           options={"g": "12", "bf": "0"})
    simple("mjpeg.avi", "Motion JPEG, yuvj420p, AVI", "mjpeg", 8, pix_fmt="yuvj420p", bit_rate=2_000_000)

    # --- WebM / AV1
    vpx = {"deadline": "realtime", "cpu-used": "8", "threads": "1", "lag-in-frames": "0", "g": "12"}
    simple("vp8.webm", "VP8 (libvpx), WebM", "libvpx", 9, bit_rate=400_000, options=vpx)
    simple("vp9.webm", "VP9 (libvpx-vp9), WebM", "libvpx-vp9", 10, bit_rate=400_000, options=vpx)
    old_log = os.environ.get("SVT_LOG")
    os.environ["SVT_LOG"] = "1"  # SVT-AV1 prints its banner to stderr unless told errors-only
    try:
        simple("av1.mkv", "AV1 (SVT-AV1), 64x64, mkv", "libsvtav1", 11, w=64, h=64,
               options={"preset": "11", "g": "12", "svtav1-params": "lp=1"})
    finally:
        if old_log is None:
            os.environ.pop("SVT_LOG", None)
        else:
            os.environ["SVT_LOG"] = old_log

    # --- container layouts
    if x264 and _has_encoder("aac"):
        _write_audio_first(folder / "audio_first.mp4", w, h, n, 12)
        add("audio_first.mp4", "H.264 + AAC, audio is stream 0 (video stream 1), mp4")
    else:
        skip("audio_first.mp4", "encoder libx264 or aac missing in this PyAV build")
    if x264:
        _write_two_video(folder / "two_video_streams.mkv", w, h, n, 13)
        add("two_video_streams.mkv", "two H.264 video streams of different content, mkv (first is the reference)")
    else:
        skip("two_video_streams.mkv", "encoder libx264 missing in this PyAV build")

    def rotate(s) -> None:
        s.metadata["rotate"] = "90"
        if hasattr(s, "set_display_rotation"):
            s.set_display_rotation(90)

    simple("rotated.mp4", "H.264, display matrix rotation 90°, mp4 (videossl shows it upright: rotation applied)", "libx264", 14,
           setup=rotate, options={"bf": "2", "g": "12"},
           note="display matrix via VideoStream.set_display_rotation(90) + rotate=90 metadata")

    durations = [20 if i % 2 == 0 else 60 for i in range(n)]
    vfr_pts = [sum(durations[:i]) for i in range(n)]
    simple("vfr.mkv", "H.264 variable frame rate (20 ms / 60 ms alternating, tb 1/1000), mkv", "libx264", 15,
           fmt="matroska", pts=vfr_pts, time_base=Fraction(1, 1000), options={"bf": "2", "g": "12"})
    simple("odd_size.mp4", "H.264 50x38 (width not a multiple of 16), mp4", "libx264", 16, w=50, h=38,
           options={"bf": "2", "g": "12"})
    simple("one_frame.mp4", "H.264, a single frame, mp4", "libx264", 17, n=1)

    # --- chroma / bit depth
    simple("yuv444.mp4", "H.264 high 4:4:4 (yuv444p), mp4", "libx264", 18, pix_fmt="yuv444p",
           options={"profile": "high444", "bf": "2", "g": "12"})
    if x264 and "yuv420p10le" in {f.name for f in av.codec.Codec("libx264", "w").video_formats}:
        simple("yuv420p10.mp4", "H.264 high 10 (yuv420p10le), mp4", "libx264", 19, pix_fmt="yuv420p10le",
               options={"profile": "high10", "bf": "2", "g": "12"})
    elif _has_encoder("libx265"):
        simple("yuv420p10.mp4", "HEVC main 10 (yuv420p10le), mp4", "libx265", 19, pix_fmt="yuv420p10le",
               note="libx264 lacks 10-bit in this build; HEVC used")
    else:
        skip("yuv420p10.mp4", "no 10-bit H.264 and no libx265 in this PyAV build")

    # --- damaged files
    if x264:
        path = folder / "truncated.mp4"
        _encode(path, "libx264", w, h, n, 20, fmt="mp4", container_options={"movflags": "+faststart"},
                options={"bf": "2", "g": "8"})  # faststart rewrites the file, so it needs a real path
        data = path.read_bytes()
        with av.open(str(path)) as c:  # cut halfway through the packet stored in the middle of the mdat
            spans = sorted((p.pos, p.size) for p in c.demux(video=0) if p.size and p.pos is not None and p.pos >= 0)
        pos, size = spans[len(spans) // 2]
        cut = pos + size // 2
        path.write_bytes(data[:cut])
        add("truncated.mp4", "H.264 mp4 (moov first, faststart), tail cut mid-packet halfway through the data",
            expect="partial", note=f"{cut} of {len(data)} bytes kept (cut inside packet {len(spans) // 2} of {len(spans)})")
    else:
        skip("truncated.mp4", "encoder libx264 missing in this PyAV build")
    garbage = folder / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(21).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    add("garbage.mp4", "4 KiB of random bytes named .mp4", expect="unreadable")

    # --- broken timestamps
    if x264:
        try:
            path, note = _write_pts_eq_dts(folder, w, h, n, 22)
        except Exception as e:
            skip("pts_eq_dts_bframes.mp4", f"no muxer accepted pts := dts: {e}")
        else:
            note += (f"; {n} frames encoded: the mp4 demuxer drops those whose rewritten pts falls before the edit list's"
                     " start (the B-frame delay; ignore_editlist=1 shows all)")
            add(path.name, f"H.264 with B-frames, every packet pts := dts (broken remux), {path.suffix[1:]}", path=path,
                note=note)
    else:
        skip("pts_eq_dts_bframes.mp4", "encoder libx264 missing in this PyAV build")
    return clips


if __name__ == "__main__":  # python tests/data/zoo.py DIR: build the zoo there and list it
    import sys
    import time

    t = time.perf_counter()
    skipped_: list = []
    for clip in make_zoo(Path(sys.argv[1] if len(sys.argv) > 1 else "zoo"), skipped=skipped_):
        size = clip.path.stat().st_size
        print(f"{clip.name:28s} {clip.expect:10s} {clip.frames:3d} {clip.width}x{clip.height} {size:7d} B  {clip.kind}"
              + (f"  [{clip.note}]" if clip.note else ""))
    for name, why in skipped_:
        print(f"skipped {name}: {why}")
    print(f"{time.perf_counter() - t:.1f} s")
