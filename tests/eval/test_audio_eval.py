"""`videossl eval audio`: ESC-50's folder layout (generated in the exact layout), 5-fold cross-validation, skips."""

from __future__ import annotations

import csv
import json
import wave
from pathlib import Path

import numpy as np
import pytest

from videossl.data.audio_sources import ESC50_COLUMNS, esc50_folds, list_esc50
from videossl.errors import VideosslError

CATEGORIES = {0: "dog", 1: "rain", 2: "crying_baby", 3: "clock_tick"}  # ESC-50 target -> category
TONES = {0: 300.0, 1: 1100.0, 2: 2500.0, 3: 5000.0}


def _wav(path: Path, freq: float, seed: int, rate: int = 44100, seconds: float = 1.0) -> None:
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    x = 0.5 * np.sin(2 * np.pi * freq * (1 + 0.02 * rng.standard_normal()) * t) + 0.05 * rng.standard_normal(t.size)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())


def make_esc50(root: Path, per_fold: int = 2, esc10_targets=(0, 2)) -> Path:
    """A tree in ESC-50's layout: meta/esc50.csv (its 7 columns) + audio/{fold}-{src}-{take}-{target}.wav."""
    (root / "meta").mkdir(parents=True)
    (root / "audio").mkdir()
    rows = []
    n = 0
    for fold in range(1, 6):
        for target, cat in CATEGORIES.items():
            for k in range(per_fold):
                src = f"{100000 + n}"
                name = f"{fold}-{src}-{'AB'[k % 2]}-{target}.wav"
                _wav(root / "audio" / name, TONES[target], seed=n)
                rows.append({"filename": name, "fold": fold, "target": target, "category": cat,
                             "esc10": str(target in esc10_targets), "src_file": src, "take": "AB"[k % 2]})
                n += 1
    with open(root / "meta" / "esc50.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(ESC50_COLUMNS))
        w.writeheader()
        w.writerows(rows)
    return root


def test_esc50_listing_folds_and_classes(tmp_path):
    root = make_esc50(tmp_path / "ESC-50-master")
    items, classes = list_esc50(root)
    assert classes == ["dog", "rain", "crying_baby", "clock_tick"]
    assert len(items) == 5 * 4 * 2
    train, test = esc50_folds(items, 3)
    assert {it.fold for it in test} == {3} and 3 not in {it.fold for it in train} and len(train) == 4 * len(test)
    items10, classes10 = list_esc50(root, esc10=True)
    assert classes10 == ["dog", "crying_baby"] and {it.label for it in items10} == {0, 1}


def test_esc50_errors_name_the_problem(tmp_path):
    with pytest.raises(VideosslError, match="meta/esc50.csv"):
        list_esc50(tmp_path)
    root = make_esc50(tmp_path / "e")
    next((root / "audio").glob("*.wav")).unlink()
    with pytest.raises(VideosslError, match="missing from"):
        list_esc50(root)


def test_eval_audio_esc50_five_folds_above_chance(tmp_path):
    """Tones per class: even a randomly initialised audio backbone separates them (well above 25 % chance)."""
    import argparse

    from videossl.eval.commands import audio as cmd

    root = make_esc50(tmp_path / "ESC-50-master")
    recipe = tmp_path / "esc.yaml"
    recipe.write_text("esc50: x\naudio: {sample_rate: 16000, channels: 1}\nseconds: 1.0\nnum_clips: 2\n"
                      "probe: {kind: softmax, optimizer: lbfgs, epochs: 50}\n")
    p = argparse.ArgumentParser()
    cmd.add_cli_arguments(p)
    out = tmp_path / "out"
    args = p.parse_args(["--config", str(recipe), "--esc50", str(root), "--encoder", "audio-small", "--random-only",
                         "--out", str(out), "--device", "cpu"])
    assert cmd.run_cli(args) == 0
    summary = json.loads((out / "results.json").read_text())
    assert summary["splits"] == ["1", "2", "3", "4", "5"]
    assert summary["results"][0]["name"] == "random-init"
    assert summary["results"][0]["top1"] > 0.6
    fold = json.loads((out / "split2" / "results.json").read_text())
    assert fold["results"][0]["num_test_videos"] == 8 and fold["results"][0]["views_per_video"] == 2
    assert any("5-fold" in line for line in fold["protocol"]) and (out / "report.md").is_file()
