"""Shared by the `videossl fit` tests: a tiny synthetic set, the CLI in a subprocess, a run's last checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from videossl.data.shards.synthetic import generate

REPO = Path(__file__).resolve().parents[2]


def tiny_synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate(out, 64, seed=1, size=32, num_frames=8, progress=False)  # 48 train videos = 6 batches of 8
    return out


def run_videossl(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``python -m videossl.cli ARGS`` from the repository root, one intra-op thread, warnings off."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "videossl.cli", *args], capture_output=True, text=True, cwd=REPO, env=env,
                       timeout=600)
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


def last_state(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def kill_and_resume(fit, tmp_path: Path, data: Path, stop: int, total: int, *common: str):
    """Run ``total`` steps uninterrupted (``a``), and ``stop`` steps then the same command to ``total`` (``b``,
    "killed" and resumed). Returns (a's state, b's state, the resumed run's stderr)."""
    fit(tmp_path / "a", data, "--trainer.max_steps", str(total), *common)
    fit(tmp_path / "b", data, "--trainer.max_steps", str(stop), *common)
    r = fit(tmp_path / "b", data, "--trainer.max_steps", str(total), *common)
    return last_state(tmp_path / "a"), last_state(tmp_path / "b"), r.stderr


def max_weight_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The largest absolute difference between two state dicts with the same keys."""
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)
