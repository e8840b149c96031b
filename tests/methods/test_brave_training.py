"""BraVe through `videossl fit`: the loss decreases, kill-and-resume is exact, 2-process DDP agrees.

All runs use a tiny synthetic set (32 px, 8 frames) and tiny views so that each run takes seconds.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.methods._fit import REPO, kill_and_resume, last_state, max_weight_difference, run_videossl, tiny_synth

TINY = [
    "--data.batch_size", "8",
    "--data.num_workers", "0",
    "--data.train_views", json.dumps([
        {"name": "narrow", "sampler": "narrow", "frames": 4, "stride": 1, "size": 24,
         "augment": {"flip_p": 0.0, "blur_p": 0.0}},
        {"name": "broad", "sampler": "broad", "frames": 8, "stride": 1, "size": 16,
         "augment": {"flip_p": 0.0, "blur_p": 0.0}},
    ]),
    "--data.eval_views", json.dumps([{"name": "clip", "sampler": "uniform", "frames": 4, "stride": 1, "size": 24,
                                      "train": False}]),
    "--model.init_args.narrow_encoder", json.dumps({"class_path": "videossl.models.Small3D", "init_args": {"width": 8}}),
    "--model.init_args.broad_encoder", json.dumps({"class_path": "videossl.models.Small3D", "init_args": {"width": 8}}),
    "--model.init_args.proj_hidden", "32",
    "--model.init_args.pred_hidden", "32",
    "--model.init_args.out_dim", "16",
    "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false",
]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return tiny_synth(tmp_path_factory)


def fit(run: Path, data: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_videossl("fit", "--config", str(REPO / "recipes/brave/synthetic.yaml"), "--data.data_dir", str(data),
                        "--trainer.default_root_dir", str(run), *TINY, *extra, check=check)


def test_brave_loss_decreases(tmp_path, synth):
    fit(tmp_path / "run", synth, "--trainer.max_epochs", "6", "--model.init_args.optim.lr", "0.3")
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    epoch_losses = [float(r["train/loss_epoch"]) for r in rows if r.get("train/loss_epoch")]
    assert len(epoch_losses) == 6
    assert epoch_losses[-1] < epoch_losses[0] - 0.05, epoch_losses
    sd = torch.load(tmp_path / "run" / "encoder.pt", weights_only=True)
    assert sd and all(k.startswith("encoder.") for k in sd)


_state = last_state


def test_kill_and_resume_reaches_the_same_weights(tmp_path, synth):
    """Stopped mid-epoch (step 3 of 6) and resumed with the same command = an uninterrupted run."""
    common = ["--model.init_args.optim.total", "9", "--data.num_workers", "2", "--model.init_args.broad_modality",
              "randconv"]
    a, b, resumed = kill_and_resume(fit, tmp_path, synth, 3, 9, *common)  # "killed" after step 3
    assert "resuming from" in resumed
    assert max_weight_difference(a, b) <= 1e-6


def test_ddp_two_cpu_processes_match_one_process_steps(tmp_path, synth):
    """2 ranks x batch 8 vs 1 rank x batch 16: same number of steps; both ranks end with equal weights."""
    check = ["--trainer.callbacks+=videossl.callbacks.WeightSyncCheck", "--trainer.max_epochs", "2"]
    fit(tmp_path / "one", synth, "--data.batch_size", "16", *check)
    fit(tmp_path / "two", synth, "--trainer.devices", "2", "--trainer.strategy", "ddp", "--data.batch_size", "8", *check)
    one = json.loads((tmp_path / "one" / "weight_sync.json").read_text())
    two = json.loads((tmp_path / "two" / "weight_sync.json").read_text())
    assert two["world_size"] == 2 and len(two["hashes"]) == 2
    assert two["equal"], two["hashes"]
    assert one["global_step"] == two["global_step"] == 2 * 3  # 48 videos / global batch 16 = 3 steps per epoch


def test_speed_switches_keep_the_checkpoint_keys_and_resume(tmp_path, synth):
    """compile + channels_last through fit: encoder.pt and last.ckpt have the plain run's keys (no _orig_mod.),
    and a second fit resumes from last.ckpt and trains on."""
    fit(tmp_path / "plain", synth, "--trainer.max_steps", "2")
    switches = ["--model.init_args.compile", "true", "--model.init_args.channels_last", "true"]
    fit(tmp_path / "fast", synth, "--trainer.max_steps", "2", *switches)
    at2 = torch.load(tmp_path / "fast" / "encoder.pt", weights_only=True)
    r = fit(tmp_path / "fast", synth, "--trainer.max_steps", "4", *switches)
    assert "resuming from" in r.stderr
    assert "speed switches: channels_last: encoder: 3 conv weight(s)" in r.stderr
    assert "compile: torch.compile of encoder, broad_encoder" in r.stderr
    plain, fast = (torch.load(tmp_path / d / "encoder.pt", weights_only=True) for d in ("plain", "fast"))
    assert list(fast) == list(plain) == list(at2) and all(k.startswith("encoder.") for k in fast)
    assert _state(tmp_path / "fast").keys() == _state(tmp_path / "plain").keys()
    assert not any("_orig_mod" in k for k in _state(tmp_path / "fast"))
    assert torch.load(tmp_path / "fast" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    assert any(not torch.equal(at2[k], fast[k]) for k in fast)  # steps 3-4 trained on


def test_print_config_and_clear_errors(tmp_path, synth):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    base = [sys.executable, "-m", "videossl.cli", "fit", "--config"]
    r = subprocess.run([*base, "recipes/brave/ucf101.yaml", "--print_config"], capture_output=True, text=True,
                       cwd=REPO, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "videossl.models.TSMResNet" in r.stdout and "lars" in r.stdout and "max_steps: 60000" in r.stdout
    r = subprocess.run([*base, "recipes/brave/synthetic.yaml", "--trainer.max_epoch", "3",
                        "--trainer.default_root_dir", str(tmp_path / "x")], capture_output=True, text=True, cwd=REPO,
                       env=env, timeout=300)
    assert r.returncode == 2 and "max_epoch" in r.stderr and "Traceback" not in r.stderr
    assert len([line for line in r.stderr.splitlines() if "error" in line]) == 1
    r = fit(tmp_path / "y", tmp_path / "no-such-data", check=False)
    assert r.returncode == 2 and "no-such-data" in r.stderr and "Traceback" not in r.stderr


def _plant_garbage_video(src: Path, dst: Path) -> str:
    """A copy of the shard set whose first training sample's video is garbage bytes; returns its key."""
    import io
    import shutil
    import tarfile

    shutil.copytree(src, dst)
    tar = sorted(dst.glob("train-*.tar"))[0]
    with tarfile.open(tar) as tf:
        members = [(m, tf.extractfile(m).read()) for m in tf.getmembers()]
    key = next(m.name.split(".")[0] for m, _ in members if m.name.endswith(".mp4"))
    with tarfile.open(tar, "w") as tf:
        for m, data in members:
            if m.name == f"{key}.mp4":
                data = b"\x00not a video" * 10
                m.size = len(data)
            tf.addfile(m, io.BytesIO(data))
    return key


def test_skips_are_run_metrics_per_epoch_with_a_summary(tmp_path, synth):
    key = _plant_garbage_video(synth, tmp_path / "data")
    r = fit(tmp_path / "run", tmp_path / "data", "--trainer.max_epochs", "2")
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    per_epoch = [float(row["data/skipped"]) for row in rows if row.get("data/skipped")]
    assert per_epoch == [1.0, 1.0]  # the bad sample is skipped (and counted) in every epoch
    reasons = [float(row["data/skipped/decode_error"]) for row in rows if row.get("data/skipped/decode_error")]
    assert reasons == [1.0, 1.0]
    rates = [float(row["data/skip_rate"]) for row in rows if row.get("data/skip_rate")]
    assert all(abs(x - 1 / 49) < 1e-6 for x in rates), rates  # 48 yielded + the skipped one
    out = r.stdout + r.stderr
    assert "data: 2 of 98 samples read were skipped (2.04 %) over 2 epoch(s); top reasons: decode error ×2" in out
    assert "threshold 1.0 %" in out  # above the default 1 %: a loud warning
    waits = [float(row["data/wait_frac"]) for row in rows if row.get("data/wait_frac")]
    assert len(waits) == 2 and all(0 <= w <= 1 for w in waits)  # every fit run reports its data wait
    assert "data wait:" in out and "frames/s fed to the model" in out
    assert key
    shown = subprocess.run([sys.executable, "-m", "videossl.cli", "data", "inspect", str(tmp_path / "run"), "--json",
                            str(tmp_path / "skips.json")], capture_output=True, text=True, cwd=REPO)
    assert shown.returncode == 0 and "decode_error ×1" in shown.stdout
    hist = json.loads((tmp_path / "skips.json").read_text())["skips"]
    assert [(h["epoch"], h["skipped"], h["reasons"]) for h in hist] == [(0, 1, {"decode_error": 1}), (1, 1, {"decode_error": 1})]


def test_device_augmentation_trains_like_the_workers_path(tmp_path, synth):
    """`--data.augment_on device` (photometric part batched after the transfer) trains like the all-in-workers
    run: the same parameters applied in another place, so the same per-step losses up to float rounding."""
    photometric = {"jitter_p": 0.8, "grayscale_p": 0.3, "blur_p": 0.5, "solarize_p": 0.2}
    views = json.dumps([{"name": "narrow", "sampler": "narrow", "frames": 4, "stride": 1, "size": 24, "augment": photometric},
                        {"name": "broad", "sampler": "broad", "frames": 8, "stride": 1, "size": 16, "augment": photometric}])
    common = ["--trainer.max_steps", "4", "--model.init_args.optim.total", "4", "--trainer.log_every_n_steps", "1",
              "--data.train_views", views]
    fit(tmp_path / "w", synth, "--data.augment_on", "workers", *common)
    r = fit(tmp_path / "d", synth, "--data.augment_on", "device", *common)
    assert "on the device (photometric)" in r.stdout + r.stderr

    def losses(run):
        return [float(x["train/loss_step"]) for x in csv.DictReader(open(run / "metrics.csv")) if x.get("train/loss_step")]

    w, d = losses(tmp_path / "w"), losses(tmp_path / "d")
    assert len(w) == len(d) == 4
    assert max(abs(a - b) for a, b in zip(w, d, strict=True)) < 1e-5, (w, d)
