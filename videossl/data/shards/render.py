"""Rendering of one synthetic video from its parameters: layers (shape, texture, motion), frames,
exact flow, masks and point tracks, difficulty knobs, and H.264 encoding (PyAV)."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from videossl.errors import VideosslError


def shape_inside(shape: str, ux: np.ndarray, uy: np.ndarray) -> np.ndarray:
    """Is local point (ux, uy) (unit = object radius) inside the shape?"""
    ax, ay = np.abs(ux), np.abs(uy)
    if shape == "square":
        return (ax <= 0.78) & (ay <= 0.78)
    if shape == "triangle":  # pointing up (-y), centroid at 0
        return (uy <= 0.55) & (np.sqrt(3.0) * ux - uy <= 1.05) & (-np.sqrt(3.0) * ux - uy <= 1.05)
    if shape == "star":
        rho = np.hypot(ux, uy)
        phi = np.arctan2(uy, ux)
        tri = np.abs(((phi * 5 / (2 * np.pi)) % 1.0) - 0.5) * 2  # 1 at tips, 0 between
        return rho <= 0.45 + 0.55 * tri**1.5
    if shape == "cross":
        return ((ax <= 0.32) & (ay <= 0.95)) | ((ay <= 0.32) & (ax <= 0.95))
    if shape == "ellipse":
        return (ux / 0.98) ** 2 + (uy / 0.55) ** 2 <= 1.0
    if shape == "diamond":
        return ax / 0.95 + ay / 0.65 <= 1.0
    if shape == "L-shape":
        return ((ux >= -0.8) & (ux <= -0.2) & (uy >= -0.85) & (uy <= 0.85)) | (
            (ux >= -0.8) & (ux <= 0.8) & (uy >= 0.25) & (uy <= 0.85)
        )
    if shape == "hexagon":
        return (ay <= 0.78) & (ax * 0.866 + ay * 0.5 <= 0.78)
    raise ValueError(shape)


TRACK_BORDER = [(0.25 * math.cos(a), 0.25 * math.sin(a)) for a in np.linspace(0, 2 * np.pi, 12, endpoint=False)] + [(0, 0)]


def _mix(w: np.ndarray, c1: np.ndarray, c2: np.ndarray) -> np.ndarray:
    return c1 * w[..., None] + c2 * (1.0 - w[..., None])


def _texture(kind: str, ux: np.ndarray, uy: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    """Smooth (band-limited) textures in a layer's own coordinates -> float RGB."""
    c1, c2 = np.asarray(p["c1"], np.float32), np.asarray(p["c2"], np.float32)
    f, a = p["freq"], p["angle"]
    if kind == "plain":
        return np.broadcast_to(c1, ux.shape + (3,)).astype(np.float32)
    if kind == "striped":
        w = 0.5 + 0.5 * np.sin(f * (np.cos(a) * ux + np.sin(a) * uy) + p["phase"])
    elif kind == "checkered":
        w = 0.5 + 0.5 * np.sin(f * ux + p["phase"]) * np.sin(f * uy)
    elif kind == "spotted":
        w = np.clip(1.5 * np.cos(f * ux + p["phase"]) * np.cos(f * uy), 0, 1)
    elif kind == "cloudy":
        w = np.zeros_like(ux)
        for fx, fy, ph, amp in p["waves"]:
            w = w + amp * np.sin(fx * ux + fy * uy + ph)
        w = 0.5 + 0.5 * np.tanh(w)
    elif kind == "gradient":
        w = 0.5 + 0.5 * np.tanh((np.cos(a) * ux + np.sin(a) * uy) * f * 0.15)
    else:
        raise ValueError(kind)
    return _mix(w.astype(np.float32), c1, c2)


# ----------------------------------------------------------------------------- parameters
@dataclass
class Layer:
    """A rigid object: local u -> image x = centre + scale * R(angle) u, per frame."""

    shape: str
    texture: str
    tex: dict[str, Any]
    centre: np.ndarray  # (T, 2)
    angle: np.ndarray  # (T,)
    scale: np.ndarray  # (T,) = radius in px

    def to_local(self, t: int, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c, s, th = self.centre[t], self.scale[t], self.angle[t]
        dx, dy = x - c[0], y - c[1]
        cos, sin = math.cos(th), math.sin(th)
        return (cos * dx + sin * dy) / s, (-sin * dx + cos * dy) / s

    def to_image(self, t: int, ux: np.ndarray, uy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c, s, th = self.centre[t], self.scale[t], self.angle[t]
        cos, sin = math.cos(th), math.sin(th)
        return c[0] + s * (cos * ux - sin * uy), c[1] + s * (sin * ux + cos * uy)


@dataclass
class VideoParams:
    index: int
    label: int
    label_name: str
    size: int
    num_frames: int
    fps: float
    obj: Layer
    obj_colour: str
    distractor: Layer | None
    distractor_colour: str | None
    bg_kind: str
    bg_colour: str
    bg_tex: dict[str, Any]
    drift: np.ndarray  # (2,) px/frame
    noise_std: float
    noise_seed: int
    track_uv: np.ndarray  # (N, 2) local coords
    knobs: dict[str, float] = field(default_factory=dict)
    caption: str = ""


@dataclass
class Rendered:
    frames: np.ndarray  # (T, H, W, 3) uint8, with noise
    clean: np.ndarray  # (T, H, W, 3) uint8, noise-free
    mask: np.ndarray  # (T, H, W) uint8: 0 bg, 1 object, 2 distractor
    amodal: np.ndarray  # (T, H, W) bool: the whole object, hidden parts included
    forward: np.ndarray  # (T-1, H, W, 2) float32 (dx, dy)
    backward: np.ndarray  # (T-1, H, W, 2) float32 (dx, dy)
    points: np.ndarray  # (T, N, 2) float32 (x, y)
    visible: np.ndarray  # (T, N) bool
    occluded: np.ndarray  # (T, N) bool


def _layer_flow(layer: Layer, t_from: int, t_to: int, x, y):
    ux, uy = layer.to_local(t_from, x, y)
    x2, y2 = layer.to_image(t_to, ux, uy)
    return x2 - x, y2 - y


def render(p: VideoParams) -> Rendered:
    T, S = p.num_frames, p.size
    y, x = np.mgrid[0:S, 0:S].astype(np.float64)
    frames = np.zeros((T, S, S, 3), np.float32)
    mask = np.zeros((T, S, S), np.uint8)
    amodal = np.zeros((T, S, S), bool)
    dmask = np.zeros((T, S, S), bool)
    for t in range(T):
        d = p.drift * t
        img = _texture(p.bg_kind, x - d[0], y - d[1], p.bg_tex)
        ux, uy = p.obj.to_local(t, x, y)
        inside = shape_inside(p.obj.shape, ux, uy)
        img = np.where(inside[..., None], _texture(p.obj.texture, ux, uy, p.obj.tex), img)
        amodal[t] = inside
        m = inside.astype(np.uint8)
        if p.distractor is not None:
            vx, vy = p.distractor.to_local(t, x, y)
            dins = shape_inside(p.distractor.shape, vx, vy)
            img = np.where(dins[..., None], _texture("plain", vx, vy, p.distractor.tex), img)
            m[dins] = 2
            dmask[t] = dins
        frames[t] = img
        mask[t] = m

    def flow_between(t_from: int, t_to: int) -> np.ndarray:
        m = mask[t_from]
        fx = np.full((S, S), p.drift[0] * (t_to - t_from))
        fy = np.full((S, S), p.drift[1] * (t_to - t_from))
        ox, oy = _layer_flow(p.obj, t_from, t_to, x, y)
        fx, fy = np.where(m == 1, ox, fx), np.where(m == 1, oy, fy)
        if p.distractor is not None:
            dx, dy = _layer_flow(p.distractor, t_from, t_to, x, y)
            fx, fy = np.where(m == 2, dx, fx), np.where(m == 2, dy, fy)
        return np.stack([fx, fy], -1).astype(np.float32)

    forward = np.stack([flow_between(t, t + 1) for t in range(T - 1)]) if T > 1 else np.zeros((0, S, S, 2))
    backward = np.stack([flow_between(t + 1, t) for t in range(T - 1)]) if T > 1 else np.zeros((0, S, S, 2))

    n = len(p.track_uv)
    points = np.zeros((T, n, 2), np.float32)
    visible = np.zeros((T, n), bool)
    occluded = np.zeros((T, n), bool)
    for t in range(T):
        px_, py_ = p.obj.to_image(t, p.track_uv[:, 0], p.track_uv[:, 1])
        points[t, :, 0], points[t, :, 1] = px_, py_
        ix, iy = np.round(px_).astype(int), np.round(py_).astype(int)
        inb = (ix >= 0) & (ix < S) & (iy >= 0) & (iy < S)
        cx, cy = np.clip(ix, 0, S - 1), np.clip(iy, 0, S - 1)
        occ = inb & dmask[t, cy, cx]  # the pixel shows the distractor ...
        if p.distractor is not None:  # ... or the distractor's shape covers the exact point
            vx, vy = p.distractor.to_local(t, px_, py_)
            occ |= inb & shape_inside(p.distractor.shape, vx, vy)
        occluded[t] = occ
        visible[t] = inb & ~occ & (mask[t, cy, cx] == 1)

    clean = np.clip(np.round(frames), 0, 255).astype(np.uint8)
    if p.noise_std > 0:
        noise = np.random.default_rng(p.noise_seed).normal(0, p.noise_std, frames.shape)
        noisy = np.clip(np.round(frames + noise), 0, 255).astype(np.uint8)
    else:
        noisy = clean.copy()
    return Rendered(noisy, clean, mask, amodal, forward, backward, points, visible, occluded)


def difficulty(p: VideoParams, r: Rendered) -> dict[str, Any]:
    """Difficulty knobs measured on the rendered ground truth."""
    obj = r.mask[:-1] == 1
    mag = np.hypot(r.forward[..., 0], r.forward[..., 1])
    speed = float(mag[obj].mean()) if obj.any() else 0.0
    total = np.linalg.norm(r.points[-1] - r.points[0], axis=-1).mean() if len(r.points) else 0.0
    am = r.amodal.sum(axis=(1, 2))
    hidden = (r.amodal & (r.mask == 2)).sum(axis=(1, 2))
    occ = float(np.mean(np.where(am > 0, hidden / np.maximum(am, 1), 0.0)))
    out = dict(p.knobs)
    out.update(
        speed_px_per_frame=round(speed, 4),
        amplitude_px=round(float(total), 4),
        occlusion=round(occ, 4),
        noise_std=round(p.noise_std, 4),
        drift_px_per_frame=round(float(np.hypot(*p.drift)), 4),
        motion_rate=round(float(p.knobs["motion_rate"]), 6),
    )
    return out


# ----------------------------------------------------------------------------- encoding & samples
@dataclass(frozen=True)
class AudioTrack:
    """A sound to mux beside the video: (channels, n) float32 in [-1, 1] at ``rate`` Hz, AAC at ``bit_rate``."""

    samples: np.ndarray
    rate: int
    bit_rate: int


def encode_mp4(frames: np.ndarray, fps: float, crf: int = 18, gop: int = 16, audio: AudioTrack | None = None) -> bytes:
    """H.264 (yuv420p) mp4 bytes with PyAV; single-threaded so the bytes are reproducible.

    ``audio``: also an AAC stream (stream 1; the video stays stream 0 with the same packets).
    """
    import av  # local import: workers only

    T, H, W, _ = frames.shape
    if H % 2 or W % 2:
        raise VideosslError(f"H.264 yuv420p needs even frame sizes, got {W}x{H}")
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        rate = Fraction(fps).limit_denominator(1001)
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        # mbtree off: with it, this x264 build gives history-dependent bytes for the same frames (a video
        # encoded after others in one process can differ), so a set made with 1 or 2 workers differed
        stream.options = {"crf": str(crf), "preset": "medium", "threads": "1", "g": str(gop), "bf": "0",
                          "x264-params": "mbtree=0"}
        stream.codec_context.thread_count = 1
        sound = _add_aac(container, audio) if audio is not None else None  # every stream before the first packet
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if sound is not None:
            _encode_aac(container, sound, audio)
    return buf.getvalue()


_LAYOUTS = {1: "mono", 2: "stereo"}


def _add_aac(container, audio: AudioTrack):
    channels = audio.samples.shape[0]
    if audio.samples.ndim != 2 or channels not in _LAYOUTS:
        raise VideosslError(f"audio must be (channels, samples) with 1 or 2 channels, got shape {audio.samples.shape}")
    stream = container.add_stream("aac", rate=audio.rate, layout=_LAYOUTS[channels])
    stream.bit_rate = audio.bit_rate
    stream.options = {"aac_coder": "fast"}  # FFmpeg's default two-loop search costs ~5x the time for these tones
    stream.codec_context.thread_count = 1
    return stream


def _encode_aac(container, stream, audio: AudioTrack) -> None:
    import av

    layout = _LAYOUTS[audio.samples.shape[0]]
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio.samples, np.float32), format="fltp", layout=layout)
    frame.sample_rate, frame.pts = audio.rate, 0
    for packet in stream.encode(frame):  # PyAV re-buffers into the codec's 1024-sample frames
        container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
