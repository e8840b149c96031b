"""videossl.data.audio: BraVe's log-mel spectrogram against a hand-written numpy reference of TF's
``tf.signal.stft(pad_end=True)`` + ``linear_to_mel_weight_matrix``; decoding, timeline and window cuts
on generated H.264 + AAC files (tests/data/_sound.py)."""

from __future__ import annotations

import io
import math

import av
import numpy as np
import pytest
import torch

from tests.data._sound import RATE, dominant_hz, pyav_audio, tone_hz, write_av
from videossl.data.audio import (
    AudioSpec,
    AudioTrack,
    NoAudio,
    as_audio_spec,
    cut_audio,
    decode_audio,
    log_mel_spectrogram,
    mel_filterbank,
    on_video_timeline,
    read_audio,
)
from videossl.errors import VideosslError


# ------------------------------------------------------------------- numpy reference of the TF ops
def ref_mel_matrix(num_mel_bins, num_spectrogram_bins, sample_rate, lower_hz, upper_hz) -> np.ndarray:
    """tf.signal.linear_to_mel_weight_matrix from its documented formula, one weight at a time: HTK mel
    ``1127 ln(1 + f / 700)``; spectrogram bin k at ``k * (sr / 2) / (bins - 1)`` Hz; band m's triangle
    rises from edge m to edge m + 1 and falls to edge m + 2 (edges equally spaced in mel,
    ``num_mel_bins + 2`` of them from lower to upper); no normalisation; the DC bin (k = 0) is zero."""

    def mel(f):
        return 1127.0 * math.log(1.0 + f / 700.0)

    edges = [mel(lower_hz) + (mel(upper_hz) - mel(lower_hz)) * i / (num_mel_bins + 1) for i in range(num_mel_bins + 2)]
    out = np.zeros((num_spectrogram_bins, num_mel_bins))
    for k in range(1, num_spectrogram_bins):
        m = mel(k * (sample_rate / 2.0) / (num_spectrogram_bins - 1))
        for b in range(num_mel_bins):
            lo, c, hi = edges[b], edges[b + 1], edges[b + 2]
            out[k, b] = max(0.0, min((m - lo) / (c - lo), (hi - m) / (hi - c)))
    return out


def ref_log_mel(x: np.ndarray, sample_rate=48000, n_fft=320, hop=160, n_mels=80, fmin=80.0, fmax=7600.0) -> np.ndarray:
    """(frames, n_mels): frames = ceil(N / hop) (tf.signal.frame pad_end), zero padding at the end, a
    periodic Hann window, |rfft|, the mel matrix above, log(1 + 10000 mel); one frame at a time."""
    n = x.shape[-1]
    frames = -(-n // hop)
    padded = np.concatenate([x.astype(np.float64), np.zeros(max(0, n_fft + hop * (frames - 1) - n))])
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic
    fb = ref_mel_matrix(n_mels, n_fft // 2 + 1, sample_rate, fmin, fmax)
    out = np.zeros((frames, n_mels))
    for j in range(frames):
        mag = np.abs(np.fft.rfft(padded[j * hop : j * hop + n_fft] * window))
        out[j] = np.log(1.0 + 10000.0 * (mag @ fb))
    return out


# ------------------------------------------------------------------------------ spectrogram
@pytest.mark.parametrize("n", [48000 // 2 + 37, 160 * 40])
def test_log_mel_equals_the_numpy_reference_on_noise(n):
    x = np.random.default_rng(n).uniform(-1, 1, n).astype(np.float32)
    got = log_mel_spectrogram(torch.from_numpy(x), AudioSpec())
    ref = ref_log_mel(x)
    assert got.shape == ref.shape == (-(-n // 160), 80) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize(("rate", "f", "n_mels", "fmax"), [(48000, 3000.0, 80, 7600.0), (16000, 1234.5, 40, 7000.0)])
def test_log_mel_equals_the_reference_on_a_sine_and_peaks_in_its_band(rate, f, n_mels, fmax):
    t = np.arange(int(0.3 * rate)) / rate
    x = (0.5 * np.sin(2 * np.pi * f * t)).astype(np.float32)
    spec = AudioSpec(sample_rate=rate, n_mels=n_mels, fmax=fmax)
    ref = ref_log_mel(x, rate, n_mels=n_mels, fmax=fmax)
    got64 = log_mel_spectrogram(torch.from_numpy(x.astype(np.float64))[None], spec)[0].numpy()  # channel dim kept
    np.testing.assert_allclose(got64, ref, atol=1e-4, rtol=0)
    # in float32 (what the reader computes, as TF does) the FFT's rounding noise (~1e-7 of the peak) in the
    # bands a pure tone leaves (nearly) empty is multiplied by 10^4 before the log: equal within 1e-4 where
    # there is sound (log-mel > 6, i.e. mel > 0.04), within 0.05 elsewhere
    got = log_mel_spectrogram(x[None], spec)[0].numpy()
    loud = ref > 6
    assert loud.sum() >= 3 * got.shape[0]
    np.testing.assert_allclose(got[loud], ref[loud], atol=1e-4, rtol=0)
    np.testing.assert_allclose(got, ref, atol=0.05, rtol=0)
    # the loudest band is the one whose triangle holds f highest (the band "containing" f)
    m = 1127 * np.log1p(f / 700)
    edges = np.linspace(1127 * np.log1p(80 / 700), 1127 * np.log1p(fmax / 700), n_mels + 2)
    tri = np.maximum(0, np.minimum((m - edges[:-2]) / (edges[1:-1] - edges[:-2]), (edges[2:] - m) / (edges[2:] - edges[1:-1])))
    want = int(np.argmax(tri))
    assert edges[want] < m < edges[want + 2]
    assert (got[2:-2].argmax(axis=1) == want).all()


def test_frames_count_and_batch_dims():
    spec = AudioSpec(sample_rate=16000, n_mels=8, fmax=4000.0)
    for n, frames in [(0, 0), (1, 1), (160, 1), (161, 2), (320, 2), (16000, 100)]:
        assert log_mel_spectrogram(torch.zeros(n), spec).shape == (frames, 8)
        assert spec.num_frames(n) == frames
    x = torch.randn(2, 3, 1000)
    out = log_mel_spectrogram(x, spec)
    assert out.shape == (2, 3, 7, 8)
    torch.testing.assert_close(out[1, 2], log_mel_spectrogram(x[1, 2], spec))
    # BraVe's broad audio: 10.24 s at 48 kHz = 491,520 samples -> 3072 frames x 80 bands
    assert AudioSpec().num_frames(AudioSpec().num_samples(64 * 4 / 25)) == 3072
    assert log_mel_spectrogram(torch.zeros(1000), spec).abs().max() == 0  # log(1 + 0): silence is all zeros
    # a sample rate + keywords is the same as the AudioSpec
    torch.testing.assert_close(log_mel_spectrogram(x, 16000, n_mels=8, fmax=4000.0), out)
    with pytest.raises(VideosslError, match="floating point"):
        log_mel_spectrogram(torch.zeros(10, dtype=torch.int16), spec)


def test_filterbank_matches_tf_formula_and_its_properties():
    fb = mel_filterbank(48000, 320, 80, 80.0, 7600.0)
    assert fb.shape == (161, 80) and fb.dtype == torch.float32
    ref = ref_mel_matrix(80, 161, 48000, 80.0, 7600.0)
    np.testing.assert_allclose(fb.numpy(), ref, atol=1e-6)
    assert (fb[0] == 0).all()  # the DC bin is zeroed
    assert fb.min() >= 0 and fb.max() <= 1
    freqs = np.linspace(0, 24000, 161)
    assert (fb[torch.from_numpy((freqs < 80) | (freqs > 7600))] == 0).all()  # nothing outside fmin..fmax
    # between the first and the last band's centre the triangles add up to 1 (no area normalisation)
    mel = 1127 * np.log1p(freqs / 700)
    edges = np.linspace(1127 * np.log1p(80 / 700), 1127 * np.log1p(7600 / 700), 82)
    inner = (mel > edges[1]) & (mel < edges[-2])
    np.testing.assert_allclose(fb.numpy()[inner].sum(axis=1), 1.0, atol=1e-5)
    # at 150 Hz per FFT bin, 16 of the 32 narrow low bands (< ~1.2 kHz, each ~25-140 Hz wide) fall between
    # two bins and catch none: BraVe's spectrogram has 16 bands that are always 0
    empty = (fb.sum(0) == 0).nonzero().flatten().tolist()
    assert len(empty) == 16 and max(empty) < 32 and (fb.sum(0)[32:] > 0).all()
    with pytest.raises(VideosslError, match="Nyquist|sample_rate / 2"):
        mel_filterbank(16000, 320, 40, 80.0, 9000.0)


@pytest.mark.parametrize("bad", [
    {"fmax": 30000.0}, {"fmin": 8000.0}, {"fmin": -1.0}, {"channels": 3}, {"channels": 0}, {"n_fft": 0}, {"hop": 0},
    {"n_mels": 0}, {"sample_rate": 0}, {"sample_rate": 16000.5}, {"seconds": 0.0}, {"seconds": -2.0},
    {"missing": "zeros"}, {"view": ""}, {"sample_rate": 8000},  # fmax 7600 > 4000 Hz Nyquist
])
def test_audio_spec_bad_values_are_errors(bad):
    with pytest.raises(VideosslError, match="audio"):
        AudioSpec(**bad)


def test_audio_spec_from_dict():
    assert as_audio_spec({"sample_rate": 16000, "n_mels": 40, "fmax": 7000.0}) == AudioSpec(16000, n_mels=40, fmax=7000.0)
    assert as_audio_spec(None) is None
    with pytest.raises(VideosslError, match="unknown audio option"):
        as_audio_spec({"rate": 16000})
    with pytest.raises(VideosslError, match="Nyquist"):
        as_audio_spec({"sample_rate": 8000})


# ------------------------------------------------------------------------------ decoding
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("sound")
    kinds = {
        "plain": {}, "audio_first": {"audio_first": True}, "late": {"audio_start": 0.5}, "stereo": {"channels": 2},
        "silent_video": {"audio": False},
    }
    return {k: (d / f"{k}.mp4", write_av(d / f"{k}.mp4", seconds=3.0, **kw)) for k, kw in kinds.items()}


@pytest.mark.parametrize("kind", ["plain", "audio_first", "late", "stereo"])
def test_decode_in_memory_equals_pyav_decode_of_the_file(files, kind):
    path, data = files[kind]
    ref, ref_start = pyav_audio(path)
    wave, start = decode_audio(data, RATE, channels=ref.shape[0])  # the stream's own rate: no resampling
    assert wave.dtype == np.float32 and np.array_equal(wave, ref) and start == ref_start
    w2, s2 = decode_audio(path, RATE, channels=ref.shape[0])  # from the path: the same samples
    assert np.array_equal(w2, wave) and s2 == start


def test_decode_resamples_downmixes_and_duplicates(files):
    path, data = files["stereo"]
    ref, _ = pyav_audio(path)
    mono, _ = decode_audio(data, RATE, channels=1)
    np.testing.assert_allclose(mono[0], (ref[0] + ref[1]) / np.sqrt(2), atol=1e-6)  # swresample's (L + R) / sqrt(2)
    _, data1 = files["plain"]
    ref1, _ = pyav_audio(data1)
    dup, _ = decode_audio(data1, RATE, channels=2)
    assert dup.shape[0] == 2 and np.array_equal(dup[0], ref1[0]) and np.array_equal(dup[1], ref1[0])
    up, start = decode_audio(data1, 48000)
    assert up.shape == (1, pytest.approx(3 * ref1.shape[1], abs=48)) and start == 0.0
    assert dominant_hz(up[0, 48000 + 4800 : 96000 - 4800], 48000) == pytest.approx(800, abs=5)  # second 1: 800 Hz


def test_no_audio_and_broken_audio_are_errors(files):
    with pytest.raises(NoAudio, match="no audio stream"):
        decode_audio(files["silent_video"][1], RATE)
    with pytest.raises(VideosslError, match="cannot open"):
        decode_audio(b"not a video at all" * 10, RATE)
    with pytest.raises(VideosslError, match="empty"):
        decode_audio(b"", RATE)
    data = bytearray(files["plain"][1])
    with av.open(io.BytesIO(bytes(data))) as c:
        packets = [(p.pos, p.size) for p in c.demux(audio=0) if p.size]
    rng = np.random.default_rng(0)
    for pos, size in packets[2:]:  # garbage in place of the AAC payloads; the video is untouched
        data[pos : pos + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    with pytest.raises(VideosslError, match=r"audio stream \d \(aac\) does not decode"):
        decode_audio(bytes(data), RATE)


# ------------------------------------------------------------------------------ timeline and cuts
def test_late_audio_is_placed_on_the_video_timeline(files):
    track = read_audio(files["late"][1], RATE)
    assert track.video_start == 0.0 and 0.4 < track.start < 0.5  # 0.5 s minus the encoder's 1024 priming samples
    x = on_video_timeline(track, 30, 10.0)
    assert x.shape == (1, 3 * RATE)
    assert np.abs(x[0, : int(0.43 * RATE)]).max() < 1e-3  # silence before the audio starts (AAC pre-echo: < 64 ms)
    onset = int(np.argmax(np.abs(x[0]) > 0.05)) / RATE
    assert onset == pytest.approx(0.5, abs=0.005)
    for sec in range(3):  # every second carries its own tone
        assert dominant_hz(x[0, sec * RATE + 2000 : (sec + 1) * RATE - 2000]) == pytest.approx(tone_hz(sec), abs=20)
    plain = on_video_timeline(read_audio(files["plain"][1], RATE), 30, 10.0)
    np.testing.assert_allclose(x[0, RATE:], plain[0, RATE:], atol=0.05)  # the same sound at the same times


def test_timeline_shift_cut_and_pad_by_hand():
    wave = np.arange(1, 11, dtype=np.float32)[None]  # 10 samples at 10 Hz: 1 s
    late = on_video_timeline(AudioTrack(wave, 10, start=0.3, video_start=0.1), num_frames=10, fps=8.0)  # 1.25 s
    assert late[0].tolist() == [0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    early = on_video_timeline(AudioTrack(wave, 10, start=0.0, video_start=0.4), num_frames=4, fps=8.0)  # 0.5 s
    assert early[0].tolist() == [5, 6, 7, 8, 9]
    short = on_video_timeline(AudioTrack(wave[:, :3], 10, start=0.0, video_start=None), num_frames=5, fps=10.0)
    assert short[0].tolist() == [1, 2, 3, 0, 0]
    with pytest.raises(VideosslError, match="fps"):
        on_video_timeline(AudioTrack(wave, 10, 0.0, 0.0), 10, 0.0)


def test_cut_loops_the_whole_waveform():
    wave = np.stack([np.arange(10), 100 + np.arange(10)]).astype(np.float32)
    assert cut_audio(wave, 10, 0.2, 0.5).tolist() == [[2, 3, 4, 5, 6], [102, 103, 104, 105, 106]]
    assert cut_audio(wave, 10, 0.7, 0.6)[0].tolist() == [7, 8, 9, 0, 1, 2]  # past the end: from the start again
    assert cut_audio(wave, 10, 1.3, 2.5)[0].tolist() == [3, 4, 5, 6, 7, 8, 9] + list(range(10)) + list(range(8))
    assert cut_audio(wave, 10, 0.0, 1.0).flags["C_CONTIGUOUS"]
    with pytest.raises(VideosslError, match="positive duration"):
        cut_audio(wave, 10, 0.0, 0.0)
    with pytest.raises(VideosslError, match="empty"):
        cut_audio(wave[:, :0], 10, 0.0, 1.0)


def _frames(rate: int, count: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(count):
        f = av.AudioFrame.from_ndarray(rng.uniform(-0.5, 0.5, (1, 1024)).astype(np.float32), format="fltp", layout="mono")
        f.sample_rate, f.pts = rate, k * 1024
        out.append(f)
    return out


def test_resampling_as_one_frame_equals_frame_by_frame_and_follows_rate_changes():
    from videossl.data.audio import _resample

    frames = _frames(16000, 6, 0)
    ref = av.AudioResampler(format="fltp", layout="mono", rate=48000)
    want = [g.to_ndarray() for f in frames for g in ref.resample(f)] + [g.to_ndarray() for g in ref.resample(None)]
    want = np.concatenate(want, axis=1)
    got = np.concatenate(_resample(frames, "mono", 48000), axis=1)
    assert np.array_equal(got, want)  # one big frame: the very same samples
    mixed = _frames(16000, 4, 1) + _frames(8000, 4, 2)  # the rate changes inside the stream
    n = np.concatenate(_resample(mixed, "mono", 48000), axis=1).shape[1]
    assert n == pytest.approx((4 * 1024 / 16000 + 4 * 1024 / 8000) * 48000, abs=200)


# ------------------------------------------------------------------------------ spectrogram augmentation
def _log_mel(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.log1p(1e4 * torch.rand(2, 30, 40, generator=g) * 0.01)  # (C, frames, mel), a loud-ish mel


def _ratio_db(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The gain in dB applied in the mel domain, element by element."""
    return 20 * torch.log10(torch.expm1(out.double()) / torch.expm1(x.double()))


def test_spectrogram_augment_off_is_the_identity_and_bad_options_are_user_errors():
    from videossl.data.audio import AudioSpec, SpectrogramAugment, augment_log_mel

    x = _log_mel()
    assert augment_log_mel(x, SpectrogramAugment()) is x
    for bad in ({"gain_db": -1}, {"eq_knots": 1}, {"shift_bins": 1.5}, {"channel_db": float("nan")}):
        with pytest.raises(VideosslError, match="audio.augment"):
            SpectrogramAugment(**bad)
    with pytest.raises(VideosslError, match="unknown audio.augment option"):
        AudioSpec(augment={"gain": 3})
    assert AudioSpec(augment={"gain_db": 6}).augment == SpectrogramAugment(gain_db=6)
    with pytest.raises(VideosslError, match="one spectrogram"):
        augment_log_mel(x[None], SpectrogramAugment(gain_db=1))


def test_gain_and_channel_gain_scale_the_mel_magnitudes_within_their_bounds():
    from videossl.data.audio import SpectrogramAugment, augment_log_mel

    x = _log_mel()
    gains, chan = [], []
    for seed in range(40):
        gen = torch.Generator().manual_seed(seed)
        db = _ratio_db(augment_log_mel(x, SpectrogramAugment(gain_db=12.0), gen), x)
        assert torch.allclose(db, db.flatten()[0].expand_as(db), atol=1e-3)  # one gain for the whole sample
        gains.append(float(db.flatten()[0]))
        db = _ratio_db(augment_log_mel(x, SpectrogramAugment(channel_db=3.0), torch.Generator().manual_seed(seed)), x)
        per = db.mean(dim=(1, 2))
        assert torch.allclose(db, per.view(2, 1, 1).expand_as(db), atol=1e-3)  # one gain per channel
        chan.append(per)
    gains, chan = torch.tensor(gains), torch.stack(chan)
    assert gains.abs().max() <= 12.0 + 1e-3 and gains.min() < -6 and gains.max() > 6  # spread over ±12 dB
    assert chan.abs().max() <= 3.0 + 1e-3 and (chan[:, 0] - chan[:, 1]).abs().max() > 1.0  # channels differ


def test_eq_is_a_piecewise_linear_curve_in_db_over_the_mel_axis_and_shift_moves_the_bands():
    from videossl.data.audio import SpectrogramAugment, augment_log_mel

    x = _log_mel()
    db = _ratio_db(augment_log_mel(x, SpectrogramAugment(eq_db=3.0, eq_knots=3), torch.Generator().manual_seed(1)), x)
    curve = db[0, 0]
    assert torch.allclose(db, curve.expand_as(db), atol=1e-3)  # the same curve at every frame and channel
    assert curve.abs().max() <= 3.0 + 1e-3 and curve.std() > 0.1
    second = curve[2:] - 2 * curve[1:-1] + curve[:-2]  # zero except at the middle knot (3 knots over 40 bands)
    assert (second.abs() > 1e-3).sum() <= 2
    seen = set()
    for seed in range(30):
        out = augment_log_mel(x, SpectrogramAugment(shift_bins=4), torch.Generator().manual_seed(seed))
        k = next(k for k in range(-4, 5) if torch.allclose(out, x[..., (torch.arange(40) - k).clamp(0, 39)], atol=1e-5))
        seen.add(k)
    assert seen == set(range(-4, 5))  # every shift in ±4 drawn, nothing else


def test_spectrogram_augment_draws_from_the_generator_only():
    from videossl.data.audio import SpectrogramAugment, augment_log_mel

    aug, x = SpectrogramAugment(gain_db=12, channel_db=3, eq_db=3, shift_bins=6), _log_mel()
    a = augment_log_mel(x, aug, torch.Generator().manual_seed(7))
    torch.manual_seed(123)  # the global RNG plays no part
    b = augment_log_mel(x, aug, torch.Generator().manual_seed(7))
    c = augment_log_mel(x, aug, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
