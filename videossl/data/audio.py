"""Sound for the reader: decode a video's audio in memory, put it on the video's timeline, cut a view's
time window, and compute BraVe's log-mel spectrogram.

BraVe's broad audio view (Recasens et al., "Broaden Your Views for Self-Supervised Video Learning",
arXiv:2103.16559) is the log-mel spectrogram of the sound under the broad video window. What is
mirrored here is the public code, deepmind/brave:

- ``brave/datasets/spectrograms.py`` (``pcm_to_log_mel_spectrogram``): ``tf.signal.stft`` with
  ``frame_length`` = ``fft_length`` = 320, ``frame_step`` 160, ``tf.signal.hann_window`` (periodic),
  ``pad_end=True``; magnitude; ``tf.signal.linear_to_mel_weight_matrix`` (80 bands, 80-7600 Hz);
  ``log(1 + 10000 * mel)``. At 48 kHz: 6.7 ms frames every 3.3 ms, 150 Hz per FFT bin.
- ``brave/models/brave/brave.py`` (``_num_audio_samples``): the window lasts ``frames * step`` video
  frames (64 x 4 at 25 fps = 10.24 s = 491,520 samples at 48 kHz), from the broad window's start; a
  video shorter than the window is repeated whole, its sound with it (``extend_sequence`` in
  ``brave/datasets/media_sequences.py``).

TF semantics kept exactly (:func:`log_mel_spectrogram`): ``frames = ceil(N / hop)``, the signal padded
with zeros at the end to ``n_fft + hop * (frames - 1)`` samples; the Hann window is periodic
(``0.5 - 0.5 cos(2 pi n / n_fft)``); the mel matrix (:func:`mel_filterbank`) is HTK's mel scale
(``1127 ln(1 + f / 700)``), triangles linear in mel between ``n_mels + 2`` equally spaced edges, no
area normalisation, the DC bin zeroed.

Conventions of this module:

- a waveform is ``(C, N)`` float32, C = 1 (mono) or 2 (stereo); decoding resamples with FFmpeg's
  swresample (``av.AudioResampler``); downmixing to mono is swresample's (``(L + R) / sqrt(2)`` for
  stereo, as ``ffmpeg -ac 1``); a mono source asked for in stereo is duplicated;
- times are seconds; the audio stream's start is the time of its first decoded frame, the video's
  start the video stream's ``start_time``: :func:`on_video_timeline` shifts the sound so that sample 0
  sounds with frame 0 (audio that starts later is preceded by silence, audio before the first frame is
  dropped) and cuts or zero-pads it to the video's duration, so that a looped clip loops its sound in
  step with the frames (:func:`cut_audio` indexes modulo the length).
"""

from __future__ import annotations

import functools
import io
import math
import os
from dataclasses import dataclass

import numpy as np
import torch

from videossl.errors import VideosslError

__all__ = [
    "LOG_FACTOR",
    "MISSING",
    "AudioSpec",
    "AudioTrack",
    "NoAudio",
    "SpectrogramAugment",
    "augment_log_mel",
    "as_audio_spec",
    "cut_audio",
    "decode_audio",
    "log_mel_spectrogram",
    "mel_filterbank",
    "on_video_timeline",
    "read_audio",
    "silence",
    "window_spectrogram",
]

#: ``log(1 + LOG_FACTOR * mel)`` (brave/datasets/spectrograms.py ``DEFAULT_LOG_FACTOR``)
LOG_FACTOR = 10_000.0
#: what a sample without an audio stream becomes: skipped (counted in the skip log) or silence (``has_audio=False``)
MISSING = ("skip", "silence")


class NoAudio(VideosslError):
    """The data has no audio stream (or one without a single sample)."""


def _from_fields(cls: type, fields: dict, what: str):
    """``cls(**fields)``, with an error naming the unknown keys and the valid ones (``what``: the option's name)."""
    unknown = set(fields) - set(cls.__dataclass_fields__)
    if unknown:
        raise VideosslError(f"unknown {what} option(s) {', '.join(sorted(unknown))}: "
                            f"choose from {', '.join(cls.__dataclass_fields__)}")
    return cls(**fields)


@dataclass(frozen=True)
class SpectrogramAugment:
    """Training-time augmentation of a log-mel spectrogram ``log(1 + 10000·mel)`` (C, frames, n_mels), applied
    in the mel domain, every draw from the sample's generator (so a resumed run draws the same):

    - ``gain_db``: one gain per sample, uniform in ±``gain_db`` dB;
    - ``channel_db``: one more per channel, uniform in ±``channel_db`` dB (moves a stereo balance);
    - ``eq_db``: a smooth random equaliser, ``eq_knots`` values uniform in ±``eq_db`` dB spread evenly over
      the mel axis and linearly interpolated between them;
    - ``shift_bins``: the whole spectrum moved by an integer uniform in ±``shift_bins`` mel bands, the edge
      band repeated into the gap (a pitch shift on the mel scale).

    All zero (the default) is the identity. Not in BraVe (arXiv:2103.16559 §3 uses the spectrogram as is): on
    a small set where each video keeps one sound, it stops the audio side from telling the training videos
    apart by level and timbre alone (BENCHMARKS.md, "Sessions 15–16").
    """

    gain_db: float = 0.0
    channel_db: float = 0.0
    eq_db: float = 0.0
    eq_knots: int = 4
    shift_bins: int = 0

    def __post_init__(self) -> None:
        for name in ("gain_db", "channel_db", "eq_db"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not (math.isfinite(v) and v >= 0):
                raise VideosslError(f"audio.augment.{name} must be a number of dB >= 0, got {v!r}")
        for name, lo in (("eq_knots", 2), ("shift_bins", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise VideosslError(f"audio.augment.{name} must be an integer >= {lo}, got {v!r}")

    @property
    def active(self) -> bool:
        return bool(self.gain_db or self.channel_db or self.eq_db or self.shift_bins)


def augment_log_mel(spec: torch.Tensor, aug: SpectrogramAugment, gen: torch.Generator | None = None) -> torch.Tensor:
    """:class:`SpectrogramAugment` applied to one log-mel spectrogram (C, frames, n_mels); a new tensor."""
    if spec.ndim != 3:
        raise VideosslError(f"augment_log_mel expects one spectrogram (C, frames, n_mels), got shape {tuple(spec.shape)}")
    if not aug.active:
        return spec
    c, _, m = spec.shape

    def uniform(*shape: int, bound: float) -> torch.Tensor:
        return (torch.rand(shape, generator=gen) * 2 - 1) * bound

    db = uniform(1, 1, 1, bound=aug.gain_db) + uniform(c, 1, 1, bound=aug.channel_db)
    if aug.eq_db:
        knots = uniform(1, 1, aug.eq_knots, bound=aug.eq_db)
        db = db + torch.nn.functional.interpolate(knots, size=m, mode="linear", align_corners=True).view(1, 1, m)
    # log(1 + F·g·mel) = log1p(g · expm1(spec)): the gain g applied to the mel magnitude, F cancels
    scaled = torch.expm1(spec) * (10.0 ** (db / 20.0)).to(spec.dtype)
    if aug.shift_bins:
        k = int(torch.randint(-aug.shift_bins, aug.shift_bins + 1, (1,), generator=gen))
        src = (torch.arange(m) - k).clamp(0, m - 1)  # band j takes band j - k; the edge band fills the gap
        scaled = scaled[..., src]
    return torch.log1p(scaled)


@dataclass
class AudioSpec:
    """The audio of each sample: decoded at ``sample_rate`` into ``channels`` channels (1 = downmix to
    mono, 2 = stereo; a mono source is duplicated), cut from the time window of the video view named
    ``view`` (its first clip) or, with ``seconds``, the first ``seconds`` of the video, and turned into a
    log-mel spectrogram (``n_fft`` frame and FFT length, ``hop``, ``n_mels`` bands over ``fmin``-``fmax``
    Hz). The defaults are BraVe's (arXiv:2103.16559; deepmind/brave ``brave/models/brave/config.py``).
    ``missing``: a sample without audio is ``skip``-ped (logged and counted like any bad sample) or
    gets ``silence`` (a zero waveform, ``has_audio=False``). ``augment``: a :class:`SpectrogramAugment`
    (or a dict of its fields) applied to the training views' spectrograms only (none by default)."""

    sample_rate: int = 48000
    channels: int = 1
    n_fft: int = 320
    hop: int = 160
    n_mels: int = 80
    fmin: float = 80.0
    fmax: float = 7600.0
    view: str = "broad"
    seconds: float | None = None
    missing: str = "skip"
    augment: SpectrogramAugment | None = None

    def __post_init__(self) -> None:
        if isinstance(self.augment, dict):
            self.augment = _from_fields(SpectrogramAugment, self.augment, "audio.augment")
        if self.augment is not None and not isinstance(self.augment, SpectrogramAugment):
            raise VideosslError(f"audio.augment must be a dict of SpectrogramAugment's fields or null, got {self.augment!r}")
        def integer(name: str, lo: int) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise VideosslError(f"audio.{name} must be an integer >= {lo}, got {v!r}")

        integer("sample_rate", 1)
        integer("n_fft", 2)
        integer("hop", 1)
        integer("n_mels", 1)
        if self.channels not in (1, 2) or isinstance(self.channels, bool):
            raise VideosslError(f"audio.channels must be 1 (mono) or 2 (stereo), got {self.channels!r}")
        if not 0 <= self.fmin < self.fmax:
            raise VideosslError(f"audio needs 0 <= fmin < fmax, got fmin={self.fmin}, fmax={self.fmax}")
        if self.fmax > self.sample_rate / 2:
            raise VideosslError(f"audio.fmax {self.fmax} Hz is above the Nyquist frequency of sample_rate "
                                f"{self.sample_rate} ({self.sample_rate / 2} Hz): lower fmax or raise sample_rate")
        if self.seconds is not None and not (math.isfinite(self.seconds) and self.seconds > 0):
            raise VideosslError(f"audio.seconds must be > 0 (or null: the view's window), got {self.seconds!r}")
        if not isinstance(self.view, str) or not self.view:
            raise VideosslError(f"audio.view must name a video view, got {self.view!r}")
        if self.missing not in MISSING:
            raise VideosslError(f"audio.missing must be one of {', '.join(MISSING)}, got {self.missing!r}")

    def num_samples(self, seconds: float) -> int:
        """Samples in a window of ``seconds``."""
        return int(round(seconds * self.sample_rate))

    def num_frames(self, num_samples: int) -> int:
        """Spectrogram frames of ``num_samples`` samples (TF ``pad_end``: ``ceil(N / hop)``)."""
        return -(-int(num_samples) // self.hop)

    def out_bytes(self, seconds: float) -> int:
        """Bytes of one sample's spectrogram (float32) for a window of ``seconds``."""
        return self.channels * self.num_frames(self.num_samples(seconds)) * self.n_mels * 4


def as_audio_spec(spec: AudioSpec | dict | None) -> AudioSpec | None:
    """An :class:`AudioSpec` from itself, a dict of its fields (YAML) or None."""
    if spec is None or isinstance(spec, AudioSpec):
        return spec
    if isinstance(spec, dict):
        return _from_fields(AudioSpec, spec, "audio")
    raise VideosslError(f"audio must be an AudioSpec, a dict of its fields or null, got {type(spec).__name__}")


# ------------------------------------------------------------------------------------------ decoding
@dataclass(frozen=True)
class AudioTrack:
    """A decoded audio stream: ``wave`` (C, N) float32 at ``sample_rate``, the time of its first sample
    ``start`` and the video stream's start ``video_start`` (seconds; None when there is no video stream)."""

    wave: np.ndarray
    sample_rate: int
    start: float
    video_start: float | None


def _short(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def _source(data: bytes | bytearray | memoryview | str | os.PathLike):
    if isinstance(data, bytes | bytearray | memoryview):
        if len(data) == 0:
            raise VideosslError("empty data: no audio to decode")
        return io.BytesIO(data if isinstance(data, bytes) else bytes(data))
    path = os.fspath(data)
    if not os.path.isfile(path):
        raise VideosslError(f"audio source {path} does not exist")
    return path


def _seconds(ts: int | None, time_base) -> float | None:
    return None if ts is None or time_base is None else float(ts * time_base)


def _resample(frames: list, layout: str, rate: int) -> list[np.ndarray]:
    """Decoded ``frames`` through ``av.AudioResampler(format="fltp", layout, rate)``, flushed. A run of
    frames that share a format, layout and rate goes in as one frame (the same samples as frame by frame,
    without the per-frame overhead: ~2x faster); a stream that changes them on the way (PyAV's resampler
    refuses a frame unlike its first) gets a new resampler per run."""
    import itertools

    import av

    out: list[np.ndarray] = []
    for (fmt, src_layout, src_rate), run in itertools.groupby(frames, lambda f: (f.format.name, f.layout.name, f.sample_rate)):
        whole = av.AudioFrame.from_ndarray(np.ascontiguousarray(np.concatenate([f.to_ndarray() for f in run], axis=-1)),
                                           format=fmt, layout=src_layout)
        whole.sample_rate, whole.pts = src_rate, 0
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        out += [g.to_ndarray() for g in resampler.resample(whole) + resampler.resample(None)]  # flushed
    return out


def read_audio(data: bytes | bytearray | memoryview | str | os.PathLike, sample_rate: int, channels: int = 1) -> AudioTrack:
    """The first audio stream of ``data`` (bytes, decoded in memory, or a path), resampled to
    ``sample_rate`` with ``channels`` channels; see :func:`decode_audio`."""
    import av

    if channels not in (1, 2):
        raise VideosslError(f"channels must be 1 or 2, got {channels}")
    try:
        container = av.open(_source(data), mode="r", metadata_errors="ignore")
    except VideosslError:
        raise
    except Exception as e:  # noqa: BLE001 - any FFmpeg error is a reason
        raise VideosslError(f"cannot open the data to read its audio: {_short(e)}") from None
    with container:
        if not container.streams.audio:
            raise NoAudio("no audio stream")
        stream = container.streams.audio[0]
        video = container.streams.video[0] if container.streams.video else None
        video_start = _seconds(video.start_time, video.time_base) if video is not None else None
        src_channels = stream.codec_context.layout.nb_channels if stream.codec_context.layout else 0
        # a mono source in stereo: duplicated below (swresample's upmix would scale it by 1/sqrt(2))
        layout = "stereo" if channels == 2 and src_channels != 1 else "mono"
        start = None
        try:
            decoded = [f for f in container.decode(stream) if f.samples > 0]
            if not decoded:
                raise NoAudio("the audio stream holds no samples")
            start = _seconds(decoded[0].pts, decoded[0].time_base)
            if start is None:
                start = _seconds(stream.start_time, stream.time_base)
            chunks = _resample(decoded, layout, sample_rate)
        except VideosslError:
            raise
        except Exception as e:  # noqa: BLE001 - FFmpeg raises assorted errors for corrupt data
            codec = stream.codec_context.name or "?"
            raise VideosslError(f"audio stream {stream.index} ({codec}) does not decode: {_short(e)}") from None
    wave = np.ascontiguousarray(np.concatenate(chunks, axis=-1), dtype=np.float32)
    if channels == 2 and wave.shape[0] == 1:
        wave = np.repeat(wave, 2, axis=0)
    return AudioTrack(wave, int(sample_rate), float(start or 0.0), video_start)


def decode_audio(data: bytes | bytearray | memoryview | str | os.PathLike, sample_rate: int,
                 channels: int = 1) -> tuple[np.ndarray, float]:
    """The first audio stream of ``data``, decoded in memory with PyAV and resampled:
    ``(wave (C, N) float32, start in seconds)``.

    ``data``: encoded bytes (read through ``io.BytesIO``, no temporary file) or a path. Resampled by
    ``av.AudioResampler(format="fltp", layout=mono|stereo, rate=sample_rate)``, flushed at the end; a
    mono source asked for with ``channels=2`` is duplicated. ``start``: the time of the first decoded
    frame (after the decoder drops an encoder's priming samples), to align with the video's frame
    times. No audio stream (or no sample): :class:`NoAudio`; a stream that does not decode:
    :class:`~videossl.errors.VideosslError` with the reason.
    """
    track = read_audio(data, sample_rate, channels)
    return track.wave, track.start


# ------------------------------------------------------------------------------------------ windows
def on_video_timeline(track: AudioTrack, num_frames: int, fps: float) -> np.ndarray:
    """``track``'s samples on the timeline of the video's frames: sample 0 sounds with frame 0 (the
    stream start offset applied: a later audio start is preceded by zeros, audio before the first frame
    dropped), cut or zero-padded to the video's ``num_frames / fps`` seconds."""
    if not fps or fps <= 0 or num_frames <= 0:
        raise VideosslError(f"cannot place audio on a video of {num_frames} frames at {fps} fps")
    rate = track.sample_rate
    offset = track.start - (track.video_start if track.video_start is not None else 0.0)
    shift = int(round(offset * rate))
    length = int(round(num_frames / fps * rate))
    wave = track.wave
    c = wave.shape[0]
    if shift >= 0:
        head = np.zeros((c, min(shift, length)), np.float32)
        body = wave[:, : max(length - shift, 0)]
    else:
        head, body = np.zeros((c, 0), np.float32), wave[:, -shift : -shift + length]
    out = np.concatenate([head, body], axis=-1)
    if out.shape[-1] < length:
        out = np.concatenate([out, np.zeros((c, length - out.shape[-1]), np.float32)], axis=-1)
    return np.ascontiguousarray(out)


def cut_audio(wave: np.ndarray, sample_rate: int, start_s: float, duration_s: float) -> np.ndarray:
    """``round(duration_s * sample_rate)`` samples of ``wave`` (C, N) from ``start_s``; a window past
    the end continues from the start (sample index modulo N), as BraVe repeats a short video whole."""
    wave = np.asarray(wave)
    if wave.ndim != 2:
        raise VideosslError(f"cut_audio needs a (C, N) waveform, got shape {wave.shape}")
    n_total = wave.shape[-1]
    n = int(round(duration_s * sample_rate))
    if n <= 0:
        raise VideosslError(f"an audio window needs a positive duration, got {duration_s} s")
    if n_total == 0:
        raise VideosslError("cannot cut a window out of an empty waveform")
    s0 = int(round(start_s * sample_rate)) % n_total
    if s0 + n <= n_total:
        return np.ascontiguousarray(wave[:, s0 : s0 + n])
    return np.ascontiguousarray(wave[:, (s0 + np.arange(n)) % n_total])


# ------------------------------------------------------------------------------------------ spectrogram
def _hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log1p(np.asarray(f, dtype=np.float64) / 700.0)


@functools.lru_cache(maxsize=16)
def _filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    bins = n_fft // 2 + 1
    freqs = np.linspace(0.0, sample_rate / 2.0, bins)[1:]  # the DC bin is zeroed (HTK)
    mel = _hz_to_mel(freqs)[:, None]
    edges = np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2)
    lower, center, upper = edges[None, :-2], edges[None, 1:-1], edges[None, 2:]
    weights = np.maximum(0.0, np.minimum((mel - lower) / (center - lower), (upper - mel) / (upper - center)))
    return np.concatenate([np.zeros((1, n_mels)), weights], axis=0).astype(np.float32)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> torch.Tensor:
    """(n_fft // 2 + 1, n_mels) float32: TF's ``linear_to_mel_weight_matrix`` (HTK mel, triangles linear
    in mel, no area normalisation, DC row zero); ``spectrum @ filterbank`` is the mel spectrum."""
    if n_mels < 1 or sample_rate <= 0 or n_fft < 2:
        raise VideosslError(f"mel_filterbank needs n_mels >= 1, sample_rate > 0, n_fft >= 2 "
                            f"(got {n_mels}, {sample_rate}, {n_fft})")
    if not 0 <= fmin < fmax <= sample_rate / 2:
        raise VideosslError(f"mel_filterbank needs 0 <= fmin < fmax <= sample_rate / 2, got {fmin}, {fmax}, {sample_rate}")
    return torch.from_numpy(_filterbank(int(sample_rate), int(n_fft), int(n_mels), float(fmin), float(fmax)).copy())


def _spec(spec: AudioSpec | int | None, params: dict) -> AudioSpec:
    if isinstance(spec, AudioSpec):
        if params:
            raise VideosslError("give the spectrogram parameters either as an AudioSpec or as a sample rate + keywords")
        return spec
    if spec is None:
        return AudioSpec(**params)
    return AudioSpec(sample_rate=spec, **params)


def log_mel_spectrogram(wave: torch.Tensor | np.ndarray, spec: AudioSpec | int | None = None, **params) -> torch.Tensor:
    """BraVe's log-mel spectrogram of ``wave`` (..., N): (..., frames, n_mels) float32,
    ``frames = ceil(N / hop)``.

    ``spec``: an :class:`AudioSpec` (its ``sample_rate``, ``n_fft``, ``hop``, ``n_mels``, ``fmin``,
    ``fmax``), or a sample rate with those as keywords (the rest at BraVe's defaults). Mirrors
    ``tf.signal.stft(frame_length=fft_length=n_fft, frame_step=hop, hann_window, pad_end=True)`` →
    ``abs`` → ``linear_to_mel_weight_matrix`` → ``log(1 + 10000 * mel)``: zeros padded at the end to
    ``n_fft + hop * (frames - 1)`` samples, then ``torch.stft(center=False)`` with a periodic Hann window.
    """
    s = _spec(spec, params)
    x = torch.as_tensor(wave)
    if not x.is_floating_point():
        raise VideosslError(f"a waveform must be floating point, got {x.dtype}")
    x = x.float() if x.dtype != torch.float64 else x
    lead, n = x.shape[:-1], int(x.shape[-1])
    frames = s.num_frames(n)
    if frames == 0:
        return x.new_zeros((*lead, 0, s.n_mels))
    pad = max(0, s.n_fft + s.hop * (frames - 1) - n)
    flat = torch.nn.functional.pad(x.reshape(-1, n), (0, pad))
    window = torch.hann_window(s.n_fft, periodic=True, dtype=x.dtype, device=x.device)
    stft = torch.stft(flat, s.n_fft, hop_length=s.hop, win_length=s.n_fft, window=window, center=False,
                      onesided=True, return_complex=True)[..., :frames]  # (B, bins, frames)
    fb = mel_filterbank(s.sample_rate, s.n_fft, s.n_mels, s.fmin, s.fmax).to(device=x.device, dtype=x.dtype)
    mel = stft.abs().transpose(1, 2) @ fb
    return torch.log(1 + LOG_FACTOR * mel).reshape(*lead, frames, s.n_mels)


def window_spectrogram(data: bytes | str | os.PathLike, spec: AudioSpec, start_s: float, duration_s: float,
                       num_frames: int, fps: float) -> torch.Tensor:
    """The log-mel spectrogram (C, frames, n_mels) of the sound of ``data`` from ``start_s`` for
    ``duration_s`` on the video's timeline (``num_frames`` frames at ``fps``; looped past its end).
    Raises :class:`NoAudio` / :class:`~videossl.errors.VideosslError` as :func:`decode_audio` does."""
    track = read_audio(data, spec.sample_rate, spec.channels)
    wave = on_video_timeline(track, num_frames, fps)
    cut = cut_audio(wave, spec.sample_rate, start_s, duration_s)
    return log_mel_spectrogram(torch.from_numpy(cut), spec)


def silence(spec: AudioSpec, duration_s: float) -> torch.Tensor:
    """The spectrogram of a zero waveform of ``duration_s`` (all zeros: ``log(1 + 0)``)."""
    return torch.zeros((spec.channels, spec.num_frames(spec.num_samples(duration_s)), spec.n_mels))
