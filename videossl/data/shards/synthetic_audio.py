"""The synthetic set's sound (``videossl data synth --audio``): a stereo AAC track that hears the motion.

Each video's object *sounds*: its position, orientation and size set the sound at every instant, so
the class (a motion) is in how the sound changes over the clip, never in one short snippet of it.
Audio-visual methods (BraVe's audio broad view, arXiv:2103.16559) can then learn the motion
from either modality.

Why no single snippet reveals the class
---------------------------------------
The same argument as the video's (:mod:`videossl.data.shards.synthetic`): the short-time magnitude
spectrum of each channel at time ``tau`` is a function of the object's state ``(x, y, theta, log s)``
at ``tau`` and of per-video constants (the timbre) drawn independently of the class. The state's
marginals are the same for every class, so an instant of sound carries no class. The generator stays
symmetric under time reversal: the state track is mirrored around the clip's centre (frame ``k`` at
``(k + 1/2) / fps``), the oscillators start at uniform random phases (a reversed sinusoid whose
frequency follows ``f(T - tau)`` is a sinusoid of that frequency track with another uniform start
phase) and the noise is white. So a reversed clip of one class sounds like a clip of its pair.
Tested in ``tests/data/shards/test_synthetic_audio.py`` (class from the whole clip's sound: far above
chance; left vs right from one frame-long snippet: chance).

The mapping (version ``MAPPING_VERSION`` = 2), exactly
-----------------------------------------------------
State per frame ``k`` (``S`` = frame size in px, the object's :class:`~videossl.data.shards.render.Layer`):
``x_n = clip(centre_x / (S - 1), 0, 1)``, ``y_n = clip(centre_y / (S - 1), 0, 1)`` (y grows down),
``theta`` = the layer's angle in radians (growing = clockwise on screen), ``lam = log(scale / S)``
(the object's radius relative to the frame). Frame ``k``'s state is the state at time
``(k + 1/2) / fps``; between frame centres it is interpolated linearly (the motions are linear in the
frame index, so this is the continuous motion), before the first and after the last centre it is held.
The track has ``round(T / fps * rate)`` samples per channel, sample ``n`` at time ``n / rate``.

Per video (the *timbre*, drawn from the audio RNG stream, see below): base pitch ``B`` log-uniform in
[130, 400] Hz; whistle base ``W`` log-uniform in [3500, 5000] Hz; modulation depth ``d ~ U(0.7, 0.95)``;
partial weights ``w_2..w_5`` and whistle weight ``w_w``, each ``10 ** (U(-3, 3) / 20)``; start phases
``phi_1..phi_5, phi_w ~ U(0, 2 pi)``; noise level ``nu ~ U(-55, -45)`` dBFS; then (version 2) the pan centre
``c ~ U(0.25, 0.75)``, a gain offset ``g ~ U(-12, 12)`` dB and an angle offset ``psi ~ U(0, 2 pi)``.

Why per-video offsets (version 2): in version 1 the pan, the pitch and the loudness told the object's
*absolute* position, size and orientation almost exactly, which one frame of the video also shows, so an
audio-visual objective could agree on the state instead of the motion. (This was session 8's explanation
of BraVe V/A's failure; session 9 found another cause, memorisation of the training pairs: BENCHMARKS.md,
"Session 9: BraVe V/A".) With a random pan centre, a pitch base spread over 1.6 octaves against the
1.5-octave pitch range of y, a whistle base spread over 0.5 octaves against x's 0.5, a ±12 dB gain and a
uniform angle offset (which makes the heard orientation independent of the seen one), the absolute sound
says little about the absolute state, while every *change* (the log-frequency slopes, the pan's slope,
the level's slope in dB, the pattern's turning) is untouched: offsets do not change slopes.

At each instant:

* **pitch follows y** (up = higher, log-frequency linear in y, 1.5 octaves over the frame height):
  fundamental ``f0 = B * 2 ** (0.75 - 1.5 y_n)``; partials ``k = 1..5`` at ``k f0`` (at most 3.4 kHz).
* **the angle turns a spectral pattern**: partial 1 has amplitude 1; partial ``k = 2..5`` has amplitude
  ``0.4 w_k sqrt(1 + d cos(theta + psi - (k - 2) pi / 2))``, i.e. power ``proportional to
  1 + d cos(theta + psi - (k-2) 90 deg)``. With equal weights
  ``(P2 - P4, P3 - P5) = 0.32 d (cos, sin)(theta + psi)``: a clockwise object turns this
  vector counterclockwise (theta grows), an anticlockwise one clockwise, and (with equal weights) the
  total power of the partials does not depend on theta.
* **x is heard twice**: the stereo pan (equal power; left gain ``cos(pi/2 p)``, right gain
  ``sin(pi/2 p)``, ``p = c + 0.5 (x_n - 0.5)`` in [0, 1]: left of the frame = left channel) and, for mono
  listeners, a whistle of amplitude ``0.3 w_w`` at ``f_w = W * 2 ** (0.5 x_n)`` (3.5-7.1 kHz, above the partials).
* **loudness follows log-scale**: everything above is multiplied by ``G = 0.35 exp(lam) 10 ** (g / 20)``
  (level in dB = 8.69 lam + g + const; power proportional to the object's area).
* oscillator ``j`` is ``cos(phi_j + 2 pi * cumsum(f_j) / rate)`` (its phase accumulates its frequency).
* noise: independent white Gaussian per channel of RMS ``10 ** (nu / 20)`` (not scaled by ``G``).

The highest frequency is below 7.1 kHz, inside the 80-7600 Hz mel range of BraVe's spectrograms
(deepmind/brave, ``brave/datasets/spectrograms.py``), so ``rate`` >= 16000 (one of ``AAC_RATES``).
The AAC stream (FFmpeg's native encoder through PyAV, 64 kbit/s: its low-pass at lower bit rates would
cut the whistle) is muxed into the same mp4 as the H.264 video, which stays stream 0 and unchanged.

Random streams and ground truth
-------------------------------
The audio's draws come from ``numpy.random.default_rng([seed, index, AUDIO_STREAM])`` (the timbre, in
the order listed above, then the noise), a stream separate from the video's ``[seed, index, 7919]``:
with ``--audio`` the frames are those of a set made without it, and without ``--audio`` the files are
byte-identical to a set made before audio existed. The state is not stored: it is the video's ground
truth, recomputed exactly by :func:`frame_state` of ``sample_params(cfg, index, label, seed)`` (``cfg``:
the ``SynthConfig`` fields of the manifest's ``params``; ``seed`` and ``index`` from the json's ``source``
``synthetic:<seed>:<index>``; a long video's event ``e``: ``seed + 1`` and ``16 * index + e``);
the json's ``audio`` holds the rate, the channels, the mapping version and the timbre's scalars, and
:func:`sample_audio` rebuilds the exact pre-encoding track.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from videossl.data.shards.render import AudioTrack, VideoParams
from videossl.errors import VideosslError

MAPPING_VERSION = 2  # 2: per-video pan centre, gain offset and wider pitch / whistle bases (module docstring)
AUDIO_STREAM = 15485863  # the audio's RNG stream id (the video's is 7919, the long preset's 104729)
AAC_RATES = (16000, 22050, 24000, 32000, 44100, 48000)  # AAC sample rates that hold the 7.4 kHz whistle
CHANNELS = 2
BIT_RATE = 64000
NUM_PARTIALS = 5
FADE_S = 0.005  # raised-cosine fades where the long preset cuts from one event's sound to the next

GROUND_TRUTH = (
    f"mp4 audio stream 1: AAC stereo; mapping v{MAPPING_VERSION} (videossl.data.shards.synthetic_audio): the pan "
    "c+0.5*(x_n-0.5) and a 3.5-7.1 kHz whistle W*2**(0.5*x_n) follow x, the fundamental B*2**(0.75-1.5*y_n) follows "
    "y, the powers of partials 2-5 (1+d*cos(theta+psi-(k-2)*pi/2)) follow the angle, the loudness "
    "0.35*scale/size*10**(g/20) follows log-scale; c, B, W, g, psi are random per video"
)


@dataclass(frozen=True)
class AudioConfig:
    """What ``--audio`` writes: sample rate (Hz) and AAC bit rate (bit/s)."""

    rate: int = 16000
    bit_rate: int = BIT_RATE

    def manifest_entry(self) -> dict[str, object]:
        return {"rate": self.rate, "channels": CHANNELS, "codec": "aac", "bit_rate": self.bit_rate,
                "mapping": MAPPING_VERSION}


def make_audio_config(audio: bool, rate: int | None = None) -> AudioConfig | None:
    """The audio settings of ``generate(..., audio=, audio_rate=)``; None without audio."""
    if not audio:
        if rate is not None:
            raise VideosslError("--audio-rate needs --audio (the set has no sound without it)")
        return None
    cfg = AudioConfig() if rate is None else AudioConfig(rate=int(rate))
    if cfg.rate not in AAC_RATES:
        raise VideosslError(
            f"--audio-rate must be one of {', '.join(map(str, AAC_RATES))} Hz (an AAC rate whose band holds the "
            f"sound's 7.4 kHz whistle), got {rate}"
        )
    return cfg


@dataclass(frozen=True)
class Timbre:
    """One video's random sound constants (see the module docstring for their ranges)."""

    base_hz: float
    whistle_hz: float
    depth: float
    weights: tuple[float, ...]  # partials 2..5
    whistle_weight: float
    phases: tuple[float, ...]  # partials 1..5, then the whistle
    noise_dbfs: float
    pan_centre: float
    gain_db: float
    angle_offset: float

    def meta(self) -> dict[str, object]:
        return {"base_hz": round(self.base_hz, 4), "whistle_hz": round(self.whistle_hz, 4),
                "depth": round(self.depth, 6), "noise_dbfs": round(self.noise_dbfs, 4),
                "pan_centre": round(self.pan_centre, 6), "gain_db": round(self.gain_db, 4),
                "angle_offset": round(self.angle_offset, 6)}


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def draw_timbre(rng: np.random.Generator) -> Timbre:
    base = _log_uniform(rng, 130.0, 400.0)
    whistle = _log_uniform(rng, 3500.0, 5000.0)
    depth = float(rng.uniform(0.7, 0.95))
    weights = tuple(float(v) for v in 10 ** (rng.uniform(-3, 3, size=NUM_PARTIALS - 1) / 20))
    whistle_weight = float(10 ** (rng.uniform(-3, 3) / 20))
    phases = tuple(float(v) for v in rng.uniform(0, 2 * np.pi, size=NUM_PARTIALS + 1))
    noise = float(rng.uniform(-55.0, -45.0))
    pan_centre = float(rng.uniform(0.25, 0.75))
    gain_db = float(rng.uniform(-12.0, 12.0))
    angle_offset = float(rng.uniform(0, 2 * np.pi))
    return Timbre(base, whistle, depth, weights, whistle_weight, phases, noise, pan_centre, gain_db, angle_offset)


def frame_state(p: VideoParams) -> np.ndarray:
    """(T, 4) float64 per frame: x_n, y_n, theta, lam of the object (the mapping's inputs)."""
    S = p.size
    c = np.asarray(p.obj.centre, np.float64)
    return np.stack([np.clip(c[:, 0] / (S - 1), 0.0, 1.0), np.clip(c[:, 1] / (S - 1), 0.0, 1.0),
                     np.asarray(p.obj.angle, np.float64), np.log(np.asarray(p.obj.scale, np.float64) / S)], -1)


def num_samples(num_frames: int, fps: float, rate: int) -> int:
    return int(round(num_frames / fps * rate))


def _interp(state: np.ndarray, fps: float, rate: int, n: int) -> list[np.ndarray]:
    t_frames = (np.arange(len(state)) + 0.5) / fps
    tau = np.arange(n) / rate
    return [np.interp(tau, t_frames, state[:, i]) for i in range(state.shape[1])]


def sample_state(state: np.ndarray, fps: float, rate: int, n: int) -> np.ndarray:
    """(n, 4): the per-frame state at each sample time (frame k at (k + 1/2) / fps, linear, held at the ends)."""
    return np.stack(_interp(state, fps, rate, n), -1)


def _cos(phase: np.ndarray) -> np.ndarray:
    """cos of a float64 phase, reduced to [0, 2 pi) first, evaluated in float32 (minutes of sound per long video)."""
    return np.cos(np.mod(phase, 2 * np.pi).astype(np.float32))


def synthesize(state: np.ndarray, timbre: Timbre, fps: float, rate: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """(2, n) float32 stereo sound of the per-frame ``state`` (T, 4) (the module docstring's mapping)."""
    x_n, y_n, theta, lam = _interp(state, fps, rate, n)
    f0 = timbre.base_hz * np.exp2(0.75 - 1.5 * y_n)
    turns = 2 * np.pi * np.cumsum(f0) / rate  # the fundamental's accumulated phase; partial k turns k times as fast
    c, s = np.cos(theta + timbre.angle_offset).astype(np.float32), np.sin(theta + timbre.angle_offset).astype(np.float32)
    d = np.float32(timbre.depth)
    voice = _cos(timbre.phases[0] + turns)
    for k, pattern in zip(range(2, NUM_PARTIALS + 1), (c, s, -c, -s), strict=True):  # cos(theta - (k-2) pi/2)
        amp = np.float32(0.4 * timbre.weights[k - 2]) * np.sqrt(1 + d * pattern)
        voice += amp * _cos(timbre.phases[k - 1] + k * turns)
    whistle = 2 * np.pi * np.cumsum(timbre.whistle_hz * np.exp2(0.5 * x_n)) / rate
    voice += np.float32(0.3 * timbre.whistle_weight) * _cos(timbre.phases[-1] + whistle)
    voice *= (0.35 * 10 ** (timbre.gain_db / 20) * np.exp(lam)).astype(np.float32)
    pan = (np.pi / 2 * (timbre.pan_centre + 0.5 * (x_n - 0.5))).astype(np.float32)
    noise = rng.standard_normal((2, n), dtype=np.float32) * np.float32(10 ** (timbre.noise_dbfs / 20))
    return np.stack([voice * np.cos(pan), voice * np.sin(pan)]) + noise


def audio_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, index, AUDIO_STREAM])


def sample_audio(p: VideoParams, seed: int, cfg: AudioConfig, hold: int = 0, start: int = 0) -> tuple[np.ndarray, Timbre]:
    """The (2, n) track of video ``p`` (drawn with ``sample_params(..., p.index, ..., seed)``) and its timbre.

    ``hold``: frames after the last one that hold its state (the long preset's still gaps); ``start``: the
    frame where it begins in a longer video (its length is then the samples from that frame's time to its end's).
    """
    rng = audio_rng(seed, p.index)
    timbre = draw_timbre(rng)
    state = frame_state(p)
    if hold:
        state = np.concatenate([state, np.repeat(state[-1:], hold, axis=0)])
    n = num_samples(start + len(state), p.fps, cfg.rate) - num_samples(start, p.fps, cfg.rate)
    return synthesize(state, timbre, p.fps, cfg.rate, n, rng), timbre


def track(samples: np.ndarray, cfg: AudioConfig) -> AudioTrack:
    return AudioTrack(samples, cfg.rate, cfg.bit_rate)


def concat_with_fades(parts: list[np.ndarray], rate: int) -> np.ndarray:
    """Concatenate (2, n_i) tracks, each faded in and out over FADE_S (no clicks where one sound cuts to the next)."""
    m = max(1, int(round(FADE_S * rate)))
    ramp = (0.5 - 0.5 * np.cos(np.pi * (np.arange(m) + 0.5) / m)).astype(np.float32)
    out = []
    for part in parts:
        part = part.copy()
        k = min(m, part.shape[1] // 2)
        part[:, :k] *= ramp[:k]
        part[:, part.shape[1] - k:] *= ramp[:k][::-1]
        out.append(part)
    return np.concatenate(out, axis=1)


__all__ = [
    "AAC_RATES",
    "AUDIO_STREAM",
    "GROUND_TRUTH",
    "MAPPING_VERSION",
    "AudioConfig",
    "Timbre",
    "concat_with_fades",
    "draw_timbre",
    "frame_state",
    "make_audio_config",
    "sample_audio",
    "sample_state",
    "synthesize",
]
