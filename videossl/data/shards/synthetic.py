"""The embedded synthetic video dataset: motion-defined classes with exact ground truth.

Every video shows one textured object (a *shape*) that moves with one of eight motions over a
textured, optionally drifting background, sometimes partly hidden by an independently moving
*distractor*. The class is the motion of the object, never its appearance.

Why no single frame reveals the class
-------------------------------------
The classes come in pairs that are time reversals of each other (left/right, up/down, cw/ccw,
in/out), and the generator is symmetric under time reversal: reversing a video of class ``c`` gives
a video with exactly the distribution of its pair. Within a pair, the distribution of one frame at
a random time is therefore the same. Across pairs the parameters that do not move (x, y, angle,
log-scale) are drawn from the same marginal as the moving ones, so position, size and orientation
in one frame carry no class information either. Tested in ``tests/data/test_synthetic.py``.

Geometry and ground-truth conventions
-------------------------------------
* Pixel ``(row i, column j)`` has its centre at image coordinates ``(x, y) = (j, i)``; x grows to
  the right, y grows *down*.
* An object maps its local coordinates ``u`` to the image by ``x = c_t + s_t R(theta_t) u``.
  With y down, a growing ``theta`` turns the object **clockwise on screen**.
* ``flow.npz`` holds ``forward`` (T-1, H, W, 2) and ``backward`` (T-1, H, W, 2), float32, in
  pixels, channel order **(dx, dy)**:
  ``forward[t, y, x] = p_{t+1} - p_t`` for the surface point seen at pixel (x, y) in frame t;
  ``backward[t, y, x] = p_t - p_{t+1}`` for the surface point seen at pixel (x, y) in frame t+1.
  So frame t+1 is reproduced by sampling frame t at ``(x, y) + backward[t, y, x]``. Flow is the
  motion of the front-most surface (distractor > object > background) and is dense everywhere.
* ``mask.npy`` (T, H, W) uint8: 0 background, 1 the object (visible part), 2 the distractor.
* ``tracks.npz``: ``points`` (T, N, 2) float32 (x, y) of N points fixed on the object,
  ``visible`` (T, N) bool (inside the frame and not hidden), ``occluded`` (T, N) bool (hidden by
  the distractor: its shape covers the exact point, or the point's pixel shows it).
* Frames are rendered by point sampling at pixel centres, so the ground truth is exact for the
  rendered (pre-encoding) frames; the stored mp4 adds H.264 loss (CRF in the manifest).

Sound (``generate(..., audio=True)``, ``videossl data synth --audio``)
--------------------------------------------------------------------
Each mp4 then also holds a stereo AAC stream whose sound at every instant is a function of the
object's state (pan and a whistle: x; pitch: y; a pattern over the partials that turns with the angle;
loudness: the size; each with a random per-video offset, so that the absolute sound says little about
the absolute state and only its changes match the video's), with the same time-reversal argument as
above: the class is in how the sound changes, not in one snippet of it. The exact mapping, its random
streams (separate from the video's:
the frames and all the ground truth above are the same with and without sound) and its tests:
:mod:`videossl.data.shards.synthetic_audio`. The json's ``audio`` and the manifest's ``audio`` hold the
rate, channels, codec and mapping version.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import Any

import numpy as np

from videossl.data.shards.format import (
    SPLITS,
    SplitWriter,
    build_manifest,
    ensure_writable_dir,
    json_bytes,
    npy_bytes,
    npz_bytes,
    write_manifest,
    write_split_index,
)
from videossl.data.shards.render import TRACK_BORDER, Layer, Rendered, VideoParams, difficulty, encode_mp4, render, shape_inside
from videossl.data.shards.synthetic_audio import GROUND_TRUTH as AUDIO_GROUND_TRUTH
from videossl.data.shards.synthetic_audio import AudioConfig, make_audio_config, sample_audio, track
from videossl.errors import VideosslError

CLASSES = (
    "translate_left",
    "translate_right",
    "translate_up",
    "translate_down",
    "rotate_cw",
    "rotate_ccw",
    "zoom_in",
    "zoom_out",
)
# class -> (dimension that moves, direction); dims: 0 x, 1 y, 2 angle, 3 log-scale
_MOTION = {
    "translate_left": (0, -1),
    "translate_right": (0, +1),
    "translate_up": (1, -1),
    "translate_down": (1, +1),
    "rotate_cw": (2, +1),
    "rotate_ccw": (2, -1),
    "zoom_in": (3, +1),
    "zoom_out": (3, -1),
}
MOTION_PHRASES = {
    "translate_left": ("moving left", "drifting left", "sliding to the left"),
    "translate_right": ("moving right", "drifting right", "sliding to the right"),
    "translate_up": ("moving up", "rising", "sliding upwards"),
    "translate_down": ("moving down", "falling", "sliding downwards"),
    "rotate_cw": ("rotating clockwise", "spinning clockwise", "turning clockwise"),
    "rotate_ccw": ("rotating counterclockwise", "spinning anticlockwise", "turning counterclockwise"),
    "zoom_in": ("growing", "zooming in", "getting bigger"),
    "zoom_out": ("shrinking", "zooming out", "getting smaller"),
}
SHAPES = ("square", "triangle", "star", "cross", "ellipse", "diamond", "L-shape", "hexagon")
OBJECT_TEXTURES = ("plain", "striped", "checkered", "spotted")
BACKGROUNDS = ("plain", "striped", "checkered", "cloudy", "gradient")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (40, 80, 230),
    "yellow": (240, 220, 40),
    "magenta": (220, 50, 200),
    "cyan": (40, 210, 220),
    "orange": (245, 140, 30),
    "purple": (130, 50, 190),
    "white": (245, 245, 245),
    "pink": (250, 150, 180),
}
BG_COLOURS = {
    "grey": (110, 110, 110),
    "dark blue": (30, 40, 80),
    "dark green": (30, 70, 40),
    "brown": (90, 60, 40),
    "black": (15, 15, 15),
    "beige": (190, 180, 150),
}


@dataclass(frozen=True)
class SynthConfig:
    """Generator knobs. Distances scale with ``size`` (given here for a 64-px frame)."""

    num_frames: int = 16
    size: int = 64
    fps: float = 12.0
    speed: tuple[float, float] = (0.8, 1.8)  # px/frame at 64 px (translation)
    angular_speed: tuple[float, float] = (5.0, 11.0)  # degrees/frame
    zoom_rate: tuple[float, float] = (0.03, 0.06)  # d log(scale) / frame
    radius: tuple[float, float] = (6.0, 10.0)  # object base radius (px at 64)
    distractor_prob: float = 0.5
    drift_prob: float = 0.5
    drift_speed: tuple[float, float] = (0.1, 0.6)  # background px/frame at 64
    noise_std: tuple[float, float] = (0.0, 3.0)  # grey levels
    num_tracks: int = 8
    crf: int = 18

    @property
    def px(self) -> float:
        return self.size / 64.0


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # about twice the motion per frame (translation clamped so the path stays in view): for
    # motion estimators, whose photometric signal is weak at ~1 px/frame on H.264-coded frames
    "fast": dict(speed=(2.0, 3.2), angular_speed=(10.0, 18.0), zoom_rate=(0.05, 0.08)),
    # the TAP-Vid protocol's 256x256 frames (arXiv:2211.03726 §4): thresholds of 1-16 px in the frame's own
    # pixels; 32 tracks per video for more queries (for `videossl eval tap`)
    "tap": dict(size=256, num_tracks=32),
    "hard": dict(
        size=128,
        speed=(1.5, 3.0),
        angular_speed=(8.0, 16.0),
        zoom_rate=(0.04, 0.07),
        distractor_prob=1.0,
        drift_prob=0.9,
        drift_speed=(0.3, 1.2),
        noise_std=(4.0, 10.0),
    ),
    # long videos of 3-8 events (videossl.data.shards.synthetic_long): 16-frame events at 48 px, 1 fps
    "long": dict(size=48, fps=1.0),
}


# ----------------------------------------------------------------------------- shapes & textures
def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _tex_params(rng: np.random.Generator, c1, c2, freq_range) -> dict[str, Any]:
    return {
        "c1": c1,
        "c2": c2,
        "freq": float(rng.uniform(*freq_range)),
        "angle": float(rng.uniform(0, np.pi)),
        "phase": float(rng.uniform(0, 2 * np.pi)),
        "waves": [
            (float(rng.normal(0, 0.25)), float(rng.normal(0, 0.25)), float(rng.uniform(0, 6.3)), 1.0)
            for _ in range(4)
        ],
    }


def _g(direction: int, t: np.ndarray, tau: int, T: int) -> np.ndarray:
    """Time profile of one motion dimension: ramp up, ramp down, or constant at a random time."""
    if direction > 0:
        return t.astype(np.float64)
    if direction < 0:
        return (T - 1 - t).astype(np.float64)
    return np.full(t.shape, float(tau))


def sample_params(cfg: SynthConfig, index: int, label: int, seed: int) -> VideoParams:
    """All random choices of video ``index`` (its own RNG stream: parallel-safe and reproducible)."""
    rng = np.random.default_rng([seed, index, 7919])
    T, S, px = cfg.num_frames, cfg.size, cfg.px
    t = np.arange(T)
    name = CLASSES[label]
    moving_dim, direction = _MOTION[name]

    # magnitudes of the 4 motion dimensions, all drawn whether or not they move (equal marginals)
    m_xy = rng.uniform(*cfg.speed, size=2) * px
    m_ang = math.radians(rng.uniform(*cfg.angular_speed))
    m_log = rng.uniform(*cfg.zoom_rate)
    dirs = [0, 0, 0, 0]
    dirs[moving_dim] = direction
    taus = rng.integers(0, T, size=4)

    r_base = rng.uniform(*cfg.radius) * px
    log_scale = math.log(r_base) + m_log * _g(dirs[3], t, taus[3], T)
    scale = np.exp(log_scale)
    r_ref = r_base * math.exp(m_log * (T - 1))  # class-independent extent for margins
    margin = 0.6 * r_ref
    centre = np.zeros((T, 2))
    for d in (0, 1):
        span = m_xy[d] * (T - 1)
        lo, hi = margin, S - 1 - margin - span
        if hi < lo:  # too fast for this frame: shrink the speed, keep the class
            m_xy[d] = max(S - 1 - 2 * margin, 1.0) / max(T - 1, 1)
            span = m_xy[d] * (T - 1)
            hi = max(lo, S - 1 - margin - span)
        base = rng.uniform(lo, hi)
        centre[:, d] = base + m_xy[d] * _g(dirs[d], t, taus[d], T)
    angle = rng.uniform(0, 2 * np.pi) + m_ang * _g(dirs[2], t, taus[2], T)

    colours = list(COLOURS)
    obj_colour = colours[rng.integers(len(colours))]
    c1 = np.array(COLOURS[obj_colour], np.float32)
    c2 = np.clip(c1 * rng.uniform(0.35, 0.6), 0, 255)
    obj_tex_kind = OBJECT_TEXTURES[rng.integers(len(OBJECT_TEXTURES))]
    shape = SHAPES[rng.integers(len(SHAPES))]
    obj = Layer(shape, obj_tex_kind, _tex_params(rng, c1, c2, (3.0, 6.0)), centre, angle, scale)

    bg_kind = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    bg_colour = list(BG_COLOURS)[rng.integers(len(BG_COLOURS))]
    b1 = np.array(BG_COLOURS[bg_colour], np.float32)
    b2 = np.clip(b1 * rng.uniform(0.5, 0.8) + rng.uniform(10, 50), 0, 255)
    bg_tex = _tex_params(rng, b1, b2, (0.35 / px, 0.8 / px))
    drift = np.zeros(2)
    if rng.random() < cfg.drift_prob:
        a = rng.uniform(0, 2 * np.pi)
        drift = rng.uniform(*cfg.drift_speed) * px * np.array([math.cos(a), math.sin(a)])

    distractor = None
    d_colour = None
    if rng.random() < cfg.distractor_prob:
        d_colour = [c for c in colours if c != obj_colour][rng.integers(len(colours) - 1)]
        e1 = np.array(COLOURS[d_colour], np.float32)
        d_shape = SHAPES[rng.integers(len(SHAPES))]
        d_speed = rng.uniform(0.5, 1.6) * px
        a = rng.uniform(0, 2 * np.pi)
        vel = d_speed * np.array([math.cos(a), math.sin(a)])
        t_cross = rng.integers(0, T)  # the distractor passes near the object at this frame
        offset = rng.normal(0, 0.4 * r_base, size=2)
        d_centre = centre[t_cross] + offset + vel[None, :] * (t - t_cross)[:, None]
        spin = math.radians(rng.uniform(-4, 4))
        d_angle = rng.uniform(0, 2 * np.pi) + spin * t
        d_scale = np.full(T, r_base * rng.uniform(0.5, 0.8))
        distractor = Layer(d_shape, "plain", _tex_params(rng, e1, e1, (3.0, 6.0)), d_centre, d_angle, d_scale)

    # track points: inside the shape with a safety border so that rounding never leaves it
    pts: list[list[float]] = []
    while len(pts) < cfg.num_tracks:
        u = rng.uniform(-1, 1, size=(64, 2))
        ok = np.ones(len(u), bool)
        for ex, ey in TRACK_BORDER:  # eroded shape: a rounded point never leaves the object
            ok &= shape_inside(shape, u[:, 0] + ex, u[:, 1] + ey)
        pts.extend(u[ok].tolist())
    track_uv = np.array(pts[: cfg.num_tracks], np.float64)

    noise_std = float(rng.uniform(*cfg.noise_std))
    phrase = MOTION_PHRASES[name][rng.integers(3)]
    tex_word = "" if obj_tex_kind == "plain" else obj_tex_kind + " "
    bg_word = f"plain {bg_colour}" if bg_kind == "plain" else bg_kind
    first = f"{tex_word}{obj_colour}"
    caption = f"{_article(first)} {first} {shape} {phrase} over {_article(bg_word)} {bg_word} background"
    if distractor is not None:
        caption += f", passed by {_article(d_colour)} {d_colour} {distractor.shape}"
    speed_knob = {0: m_xy[0], 1: m_xy[1], 2: math.degrees(m_ang), 3: m_log}[moving_dim]
    knobs = {
        "speed_px_per_frame": 0.0,  # filled in from the flow at render time
        "motion_rate": float(speed_knob),
        "motion_rate_unit": ["px/frame", "px/frame", "deg/frame", "log-scale/frame"][moving_dim],
        "drift_px_per_frame": float(np.hypot(*drift)),
        "noise_std": noise_std,
        "has_distractor": distractor is not None,
    }
    return VideoParams(
        index=index,
        label=label,
        label_name=name,
        size=S,
        num_frames=T,
        fps=cfg.fps,
        obj=obj,
        obj_colour=obj_colour,
        distractor=distractor,
        distractor_colour=d_colour,
        bg_kind=bg_kind,
        bg_colour=bg_colour,
        bg_tex=bg_tex,
        drift=drift,
        noise_std=noise_std,
        noise_seed=int(rng.integers(2**31)),
        track_uv=track_uv,
        knobs=knobs,
        caption=caption,
    )


# ----------------------------------------------------------------------------- rendering
def split_of(index: int, num_videos: int, num_classes: int, fractions=(0.7, 0.15, 0.15)) -> str:
    """Stratified split: the k-th video of each class goes by its rank among that class's videos."""
    label = index % num_classes
    n_cls = len(range(label, num_videos, num_classes))
    k = index // num_classes
    n_train = int(round(fractions[0] * n_cls))
    n_val = int(round(fractions[1] * n_cls))
    if n_cls >= 3:
        n_train, n_val = max(n_train, 1), max(n_val, 1)
        n_train = min(n_train, n_cls - 2)
    if k < n_train:
        return "train"
    if k < n_train + n_val:
        return "val"
    return "test"


def make_sample(
    index: int, cfg: SynthConfig, seed: int, num_videos: int, audio: AudioConfig | None = None
) -> tuple[str, str, int, dict[str, bytes]]:
    """Render + encode video ``index`` (with its sound if ``audio``); returns (split, key, label, members)."""

    label = index % len(CLASSES)
    p = sample_params(cfg, index, label, seed)
    r = render(p)
    split = split_of(index, num_videos, len(CLASSES))
    key = f"synth_{index:06d}"
    meta = {
        "key": key,
        "label": label,
        "label_name": p.label_name,
        "split": split,
        "caption": p.caption,
        "fps": cfg.fps,
        "num_frames": cfg.num_frames,
        "width": cfg.size,
        "height": cfg.size,
        "duration": cfg.num_frames / cfg.fps,
        "source": f"synthetic:{seed}:{index}",
        "shape": p.obj.shape,
        "colour": p.obj_colour,
        "texture": p.obj.texture,
        "background": p.bg_kind,
        "difficulty": difficulty(p, r),
    }
    sound = None
    if audio is not None:  # its own RNG stream: the frames and the ground truth above are unchanged
        samples, timbre = sample_audio(p, seed, audio)
        sound = track(samples, audio)
        meta["audio"] = {**audio.manifest_entry(), **timbre.meta()}
    members = {
        "mp4": encode_mp4(r.frames, cfg.fps, cfg.crf, audio=sound),
        "json": json_bytes(meta),
        "mask.npy": npy_bytes(r.mask),
        "flow.npz": npz_bytes(forward=r.forward, backward=r.backward),
        "tracks.npz": npz_bytes(points=r.points, visible=r.visible, occluded=r.occluded),
    }
    return split, key, label, members


def make_config(preset: str = "default", **overrides: Any) -> SynthConfig:
    if preset not in PRESETS:
        raise VideosslError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    values = dict(PRESETS[preset])
    values.update({k: v for k, v in overrides.items() if v is not None})
    cfg = replace(SynthConfig(), **values)
    validate_config(cfg)
    return cfg


def validate_config(cfg: SynthConfig) -> None:
    if cfg.size <= 0:
        raise VideosslError(f"--size must be a positive even number of pixels, got {cfg.size}")
    if cfg.size < 16 or cfg.size % 2:
        raise VideosslError(f"--size must be an even number >= 16 (H.264 needs even sizes), got {cfg.size}")
    if cfg.num_frames < 2:
        raise VideosslError(f"--frames must be at least 2 (motion needs two frames), got {cfg.num_frames}")
    if cfg.num_tracks < 1:
        raise VideosslError(f"--tracks must be at least 1, got {cfg.num_tracks}")
    if not cfg.fps > 0:
        raise VideosslError(f"--fps must be positive, got {cfg.fps}")


def generate(
    out: str | os.PathLike,
    num_videos: int = 1200,
    *,
    preset: str = "default",
    seed: int = 0,
    workers: int = 1,
    max_per_shard: int = 64,
    progress: bool = True,
    sample_fn=None,
    classes: list[str] | None = None,
    ground_truth: dict[str, str] | None = None,
    video_frames: int | None | bool = True,
    audio: bool = False,
    audio_rate: int | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Generate the synthetic shard set in ``out``; returns the manifest.

    ``audio``: each mp4 also gets a stereo AAC track at ``audio_rate`` Hz (default 16000) that follows the
    object's motion state (:mod:`videossl.data.shards.synthetic_audio`); the frames are the same either way.

    ``sample_fn`` (default :func:`make_sample`; called as ``sample_fn(index, cfg=, seed=, num_videos=,
    audio=)``), ``classes``, ``ground_truth`` (manifest notes) and ``video_frames`` (frames per video for
    the manifest; None: they vary) let other presets reuse the writer (:mod:`videossl.data.shards.synthetic_long`).
    """

    if num_videos < 1:
        raise VideosslError(f"--num-videos must be at least 1, got {num_videos}")
    if workers < 1:
        raise VideosslError(f"--workers must be at least 1, got {workers}")
    cfg = make_config(preset, **overrides)
    sound = make_audio_config(audio, audio_rate)
    out_dir = ensure_writable_dir(out)
    writers = {s: SplitWriter(out_dir, s, max_count=max_per_shard) for s in SPLITS}
    labels: dict[str, list[int]] = {s: [] for s in SPLITS}
    job = partial(sample_fn or make_sample, cfg=cfg, seed=seed, num_videos=num_videos, audio=sound)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    cols = [TextColumn("synth"), BarColumn(), MofNCompleteColumn(), TextColumn("videos"), TimeRemainingColumn()]
    with Progress(*cols, disable=not progress, transient=False) as bar:
        task = bar.add_task("synth", total=num_videos)
        if workers == 1:
            results = map(job, range(num_videos))
            pool = None
        else:
            pool = mp.get_context("spawn").Pool(workers)
            results = pool.imap(job, range(num_videos), chunksize=4)
        try:
            for split, key, label, members in results:  # ordered: output is independent of workers
                writers[split].write(key, members)
                labels[split].append(label)
                bar.advance(task)
        finally:
            if pool is not None:
                pool.terminate()
    shards = {s: w.close() for s, w in writers.items()}
    for s in SPLITS:
        write_split_index(out_dir, s, shards[s])
    params = {"preset": preset, "seed": seed, "num_videos": num_videos, **_jsonable(asdict(cfg))}
    frames = cfg.num_frames if video_frames is True else video_frames
    notes = dict(ground_truth or GROUND_TRUTH)
    extra: dict[str, Any] = {"ground_truth": notes}
    if sound is not None:  # only then: a set without sound keeps its manifest byte for byte
        params["audio_rate"] = sound.rate
        notes["mp4 audio"] = AUDIO_GROUND_TRUTH
        extra["audio"] = sound.manifest_entry()
    manifest = build_manifest(
        kind="synthetic",
        classes=list(classes or CLASSES),
        splits=shards,
        labels_per_split=labels,
        params=params,
        video={"fps": cfg.fps, "width": cfg.size, "height": cfg.size, "num_frames": frames, "codec": "h264"},
        extra=extra,
    )
    write_manifest(out_dir, manifest)
    return manifest


GROUND_TRUTH = {
    "mask.npy": "(T,H,W) uint8: 0 background, 1 object (visible part), 2 distractor",
    "flow.npz": "forward/backward (T-1,H,W,2) float32 px, channels (dx,dy); frame t+1 ~ frame t sampled at (x,y)+backward[t]",
    "tracks.npz": "points (T,N,2) float32 (x,y); visible (T,N) bool; occluded (T,N) bool",
}


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def default_workers() -> int:
    return max(1, min(4, (os.cpu_count() or 1)))


__all__ = [
    "CLASSES",
    "PRESETS",
    "Rendered",
    "SynthConfig",
    "VideoParams",
    "encode_mp4",
    "generate",
    "make_config",
    "make_sample",
    "render",
    "sample_params",
]
