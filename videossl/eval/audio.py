"""Frozen audio-backbone evaluation: log-mel windows → features → linear probe (softmax or SVM) → report.

BraVe evaluates its audio features with a linear classifier on frozen features (ESC-50: a linear SVM,
5-fold cross-validation; Recasens et al., arXiv:2103.16559, §4.3). Here the same probes, calibration and
selective-prediction report as the video linear evaluation (:func:`videossl.eval.linear.evaluate_features`)
run on features of the audio backbone:

* each recording is decoded (:func:`videossl.data.audio.decode_audio`, resampled to ``audio.sample_rate``),
  cut into ``num_clips`` windows of ``seconds`` with evenly spaced starts (a recording shorter than a window
  is looped whole, as BraVe loops short videos), each window turned into BraVe's log-mel spectrogram
  (:func:`videossl.data.audio.log_mel_spectrogram`) and fed to the encoder: one feature row per window;
  the probe's scores are averaged over a recording's windows;
* a recording without an audio stream is skipped and counted (the count is in the report), never silently
  replaced;
* data: a shard set with sound (``data_dir``: train / test splits, e.g. the synthetic set made with
  ``videossl data synth --audio``), or an ESC-50 folder (``esc50``: each of the 5 folds is the test fold
  once, the other four train; the report gives each fold and the mean ± std, Piczak 2015).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from videossl.data.audio import AudioSpec, NoAudio, cut_audio, decode_audio, log_mel_spectrogram
from videossl.data.audio_sources import AudioItem, esc50_folds, list_esc50, shard_audio_items
from videossl.data.shards.format import load_manifest
from videossl.errors import VideosslError
from videossl.eval.features import FeatureSet
from videossl.eval.frozen import ProbeConfig

__all__ = ["AudioEvalConfig", "AudioFeatures", "extract_audio_features", "audio_protocol_lines", "load_items"]


@dataclass
class AudioEvalConfig:
    data_dir: str | None = None  # a shard set whose videos carry sound
    esc50: str | None = None  # or an ESC-50 folder (meta/esc50.csv + audio/): 5-fold cross-validation
    esc10: bool = False  # ESC-50 only: the ESC-10 subset
    train_split: str = "train"
    test_split: str = "test"
    audio: dict[str, Any] = field(default_factory=dict)  # AudioSpec fields: sample_rate, channels, n_fft, ...
    seconds: float = 5.0  # window length
    num_clips: int = 1  # windows per test recording (evenly spaced)
    train_clips: int | None = None  # windows per train recording (default: num_clips)
    batch_size: int = 32
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    encoder: dict[str, Any] | None = None
    pretrain: str = ""
    name: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AudioEvalConfig:
        d = dict(d)
        bad = sorted(set(d) - set(cls.__dataclass_fields__))
        if bad:
            raise VideosslError(f"unknown key(s) in audio eval config: {', '.join(bad)} "
                                f"(valid: {', '.join(sorted(cls.__dataclass_fields__))})")
        probe = d.pop("probe", {}) or {}
        pbad = sorted(set(probe) - set(ProbeConfig.__dataclass_fields__))
        if pbad:
            raise VideosslError(f"unknown key(s) in probe config: {', '.join(pbad)}")
        cfg = cls(probe=ProbeConfig(**probe), **d)
        if (cfg.data_dir is None) == (cfg.esc50 is None):
            raise VideosslError("give exactly one of data_dir (a shard set with sound) and esc50 (an ESC-50 folder)")
        if cfg.seconds <= 0 or cfg.num_clips < 1 or (cfg.train_clips is not None and cfg.train_clips < 1):
            raise VideosslError("seconds must be > 0 and num_clips / train_clips >= 1")
        if cfg.probe.kind not in ("softmax", "svm"):
            raise VideosslError(f"probe.kind must be 'softmax' or 'svm', got {cfg.probe.kind!r}")
        cfg.spec()  # AudioSpec validates its own fields
        return cfg

    def spec(self) -> AudioSpec:
        return AudioSpec(**{**self.audio, "seconds": self.seconds})

    @property
    def dataset_name(self) -> str:
        return self.name or Path(self.esc50 or self.data_dir or "audio").name


@dataclass
class AudioFeatures:
    features: FeatureSet
    skipped: list[tuple[str, str]]  # (key, reason): recordings without a readable audio stream


def window_starts(duration: float, seconds: float, k: int) -> list[float]:
    """``k`` window starts (s) evenly spaced from 0 to the last start that fits (0 for a short recording)."""
    last = max(duration - seconds, 0.0)
    return [last / 2] if k == 1 else [float(x) for x in np.linspace(0.0, last, k)]


def spectrogram_windows(item: AudioItem, spec: AudioSpec, k: int) -> torch.Tensor:
    """(k, C, frames, n_mels) log-mel windows of one recording; raises :class:`NoAudio` without sound."""
    wave, _ = decode_audio(item.source, spec.sample_rate, spec.channels)
    duration = wave.shape[-1] / spec.sample_rate
    cuts = [cut_audio(wave, spec.sample_rate, s, spec.seconds) for s in window_starts(duration, spec.seconds, k)]
    return log_mel_spectrogram(torch.from_numpy(np.stack(cuts)), spec)


@torch.no_grad()
def extract_audio_features(encoder: nn.Module, items: list[AudioItem], spec: AudioSpec, clips: int, batch_size: int = 32,
                           device: str | torch.device = "cpu", progress: bool = True) -> AudioFeatures:
    """One feature row per window (``clips`` per recording), rows of a recording together, in item order."""
    from rich.progress import Progress

    was_training = encoder.training
    encoder.eval().to(device)
    feats, labels, ids, skipped = [], [], [], []
    pending: list[tuple[AudioItem, torch.Tensor]] = []

    def flush():
        if not pending:
            return
        x = torch.cat([w for _, w in pending]).to(device)
        f = encoder(x).float().cpu()
        feats.append(f)
        for it, w in pending:
            labels.extend([it.label] * w.shape[0])
            ids.extend([it.key] * w.shape[0])
        pending.clear()

    with Progress(transient=True, disable=not progress) as bar:
        task = bar.add_task("audio features", total=len(items))
        for it in items:
            try:
                pending.append((it, spectrogram_windows(it, spec, clips)))
            except NoAudio as e:
                skipped.append((it.key, str(e)))
            except VideosslError as e:
                skipped.append((it.key, f"audio decode error: {str(e)[:200]}"))
            if sum(w.shape[0] for _, w in pending) >= batch_size:
                flush()
            bar.advance(task)
        flush()
    encoder.train(was_training)
    if not feats:
        raise VideosslError(f"none of {len(items)} recordings had a readable audio stream ({skipped[:1]}): "
                            "nothing to evaluate; make the data with sound (`videossl data synth --audio`, "
                            "`make-shards --keep-audio`)")
    return AudioFeatures(FeatureSet(torch.cat(feats), torch.tensor(labels), ids, clips), skipped)


def load_items(cfg: AudioEvalConfig) -> tuple[dict[str, tuple[list[AudioItem], list[AudioItem]]], list[str]]:
    """{round name: (train items, test items)} and the class names: one round (train/test splits of a shard
    set) or five (ESC-50's folds)."""
    if cfg.esc50:
        items, classes = list_esc50(cfg.esc50, esc10=cfg.esc10)
        folds = sorted({it.fold for it in items})
        return {str(f): esc50_folds(items, f) for f in folds}, classes
    classes = list(load_manifest(cfg.data_dir).get("classes") or [])
    if not classes:
        raise VideosslError(f"{cfg.data_dir}/manifest.json has no class list: a labelled shard set is needed")
    train = list(shard_audio_items(cfg.data_dir, cfg.train_split))
    test = list(shard_audio_items(cfg.data_dir, cfg.test_split))
    return {"": (train, test)}, classes


def audio_protocol_lines(cfg: AudioEvalConfig, spec_enc: dict[str, Any], weights: list[str], part: str) -> list[str]:
    s = cfg.spec()
    p = cfg.probe
    probe = f"linear SVM (one-vs-rest squared hinge), C={p.svm_c}" if p.kind == "svm" else \
        f"softmax, {p.optimizer}, {p.epochs} epochs, lr {p.lr}, wd {p.weight_decay}"
    if cfg.esc50:
        data = (f"ESC-50 folder {cfg.esc50}{' (ESC-10 subset)' if cfg.esc10 else ''}: 5-fold cross-validation "
                "(test fold vs the other four)")
    else:
        data = f"data: {cfg.data_dir}, train split '{cfg.train_split}', test split '{cfg.test_split}'"
    return [
        f"backbone ({part}): {spec_enc.get('class_path')} {json.dumps(spec_enc.get('init_args', {}), sort_keys=True)}",
        "feature: the audio backbone's pooled output (before any SSL projector), frozen, eval mode",
        f"audio: {s.sample_rate} Hz, {s.channels} channel(s); log-mel: STFT {s.n_fft} / hop {s.hop}, Hann, {s.n_mels} mel bins "
        f"{s.fmin:g}-{s.fmax:g} Hz, log(1 + 10000 mel)",
        f"windows: {cfg.seconds:g} s; {cfg.train_clips or cfg.num_clips} per train recording, {cfg.num_clips} per test "
        "recording (evenly spaced; short recordings looped)",
        f"aggregation over windows: {p.aggregate}",
        data,
        f"probe: {probe}; standardised features",
        f"pretraining: {cfg.pretrain or 'see run config'}",
        *weights,
    ]


def timed_features(encoder, items, spec, clips, cfg: AudioEvalConfig, device) -> tuple[AudioFeatures, float]:
    t0 = time.perf_counter()
    out = extract_audio_features(encoder, items, spec, clips, cfg.batch_size, device)
    return out, time.perf_counter() - t0
