"""Tiny H.264 (+ AAC) mp4 files with a known sound, written offline with PyAV, for the audio tests.

The sound is a tone whose frequency changes every second, ``tone_hz(t) = 400 + 400 * floor(t)`` Hz
(400, 800, 1200, ... Hz), so the dominant frequency of a cut tells which second of the video it came
from. Frames: a flat grey level that changes per frame (content is irrelevant here).
"""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

RATE = 16000  # the AAC stream's sample rate


def tone_hz(t: np.ndarray | float) -> np.ndarray:
    return 400.0 + 400.0 * np.floor(np.asarray(t, dtype=np.float64))


def tone(seconds: float, rate: int = RATE, channels: int = 1) -> np.ndarray:
    """(channels, N) float32: the per-second tone (phase continuous); channel 1 at half the amplitude."""
    t = np.arange(int(round(seconds * rate))) / rate
    phase = 2 * np.pi * np.cumsum(tone_hz(t)) / rate
    wave = 0.4 * np.sin(phase)
    return np.stack([wave * (1.0 if c == 0 else 0.5) for c in range(channels)]).astype(np.float32)


def write_av(
    path: str | Path | None = None,
    *,
    seconds: float = 4.0,
    fps: int = 10,
    size: int = 32,
    audio: bool = True,
    audio_start: float = 0.0,
    audio_seconds: float | None = None,
    audio_first: bool = False,
    channels: int = 1,
    rate: int = RATE,
) -> bytes:
    """An mp4 (H.264 video of ``seconds`` at ``fps``; with ``audio``, an AAC stream of the tone starting at
    ``audio_start`` s and lasting ``audio_seconds`` (default: to the video's end), added before the
    video stream when ``audio_first``). Returns the bytes (also written to ``path`` when given)."""
    buf = io.BytesIO()
    n = int(round(seconds * fps))
    with av.open(buf, "w", format="mp4", options={"fflags": "+bitexact"}) as c:
        a = None
        if audio and audio_first:
            a = c.add_stream("aac", rate=rate)
        v = c.add_stream("libx264", rate=fps)
        v.width = v.height = size
        v.pix_fmt = "yuv420p"
        v.options = {"threads": "1", "preset": "ultrafast", "g": "10"}
        if audio and not audio_first:
            a = c.add_stream("aac", rate=rate)
        if a is not None:
            a.layout = "mono" if channels == 1 else "stereo"
            a.options = {"flags": "+bitexact"}
        for i in range(n):
            f = av.VideoFrame.from_ndarray(np.full((size, size, 3), (i * 7) % 256, np.uint8), format="rgb24")
            f.pts = i
            for p in v.encode(f):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
        if a is not None:
            dur = audio_seconds if audio_seconds is not None else seconds - audio_start
            wave = tone(audio_start + dur, rate, channels)[:, int(round(audio_start * rate)):]
            step = 1024 * 4
            for s0 in range(0, wave.shape[1], step):
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[:, s0 : s0 + step]), format="fltp",
                                                layout=a.layout.name)
                af.sample_rate = rate
                af.pts = int(round(audio_start * rate)) + s0
                af.time_base = Fraction(1, rate)
                for p in a.encode(af):
                    c.mux(p)
            for p in a.encode():
                c.mux(p)
    data = buf.getvalue()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(data)
    return data


def pyav_audio(data_or_path) -> tuple[np.ndarray, float]:
    """The reference: every frame of the first audio stream decoded by PyAV (no resampling), concatenated,
    and the first frame's time."""
    src = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else str(data_or_path)
    with av.open(src) as c:
        frames = list(c.decode(audio=0))
    return np.concatenate([f.to_ndarray() for f in frames], axis=1), float(frames[0].time)


def dominant_hz(wave: np.ndarray, rate: int = RATE) -> float:
    """The frequency of the largest FFT magnitude of a 1-D chunk (Hann-windowed)."""
    w = np.asarray(wave, dtype=np.float64)
    spec = np.abs(np.fft.rfft(w * np.hanning(w.size)))
    return float(np.fft.rfftfreq(w.size, 1 / rate)[int(np.argmax(spec))])
