"""`videossl launch slurm --dry-run` writes a correct sbatch script; `videossl bench train` runs on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONWARNINGS": "ignore"}


def test_launch_slurm_dry_run_writes_sbatch(tmp_path):
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "videossl.cli", "launch", "slurm", "--config", "recipes/brave/ucf101.yaml",
                        "--nodes", "2", "--gpus-per-node", "4", "--partition", "gpu", "--dry-run", "--",
                        "--trainer.default_root_dir", str(run), "--trainer.max_steps", "100"],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    script = (run / "slurm" / "launch.sbatch").read_text()
    assert "#SBATCH --nodes=2" in script and "#SBATCH --ntasks-per-node=4" in script
    assert "#SBATCH --gpus-per-node=4" in script and "#SBATCH --partition=gpu" in script
    srun = [line for line in script.splitlines() if line.startswith("srun ")][0]
    assert "--trainer.num_nodes 2 --trainer.devices 4" in srun and "--trainer.max_steps 100" in srun


def test_bench_train_runs_on_cpu_and_reports_ratios(tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, "-m", "videossl.cli", "bench", "train", "--config", "recipes/brave/synthetic.yaml",
                        "--device", "cpu", "--batch-size", "2", "--steps", "1", "--warmup", "1", "--json", str(out)],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())["results"]
    assert set(res) == {"method step", "plain-torch encoders"}
    for v in res.values():
        assert v["steps_per_s"] > 0 and v["tflop_per_step"] > 0 and v["ratio_vs_reference"] > 0
    assert res["plain-torch encoders"]["ratio_vs_reference"] == 1.0
    # the method step does more work than its encoders alone
    assert res["method step"]["tflop_per_step"] > res["plain-torch encoders"]["tflop_per_step"]


@pytest.mark.slow
def test_bench_train_switches_report_each_against_plain_and_say_what_they_did(tmp_path):
    """--switches: every switch is timed against the plain step of the same run; on the CPU the CUDA-only ones
    are reported as skipped; each switch that ran records what it changed (not its timing: no thresholds)."""
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, "-m", "videossl.cli", "bench", "train", "--config", "recipes/brave/synthetic.yaml",
                        "--device", "cpu", "--batch-size", "2", "--steps", "1", "--warmup", "1", "--json", str(out),
                        "--switches", "bf16,tf32,channels_last,fused_adamw,compile,all", "--rounds", "2"],
                       capture_output=True, text=True, cwd=REPO, timeout=600, env=_env())
    assert r.returncode == 0, r.stderr[-2000:]
    assert "x plain" in r.stdout and "speed switches" in r.stdout
    rep = json.loads(out.read_text())
    assert set(rep["results"]) == {"method step", "plain-torch encoders"}  # the rows before are unchanged
    sw = rep["switches"]
    assert list(sw) == ["plain", "bf16", "tf32", "channels_last", "fused_adamw", "compile", "all"]  # plain added, first
    for name in ("bf16", "tf32", "fused_adamw"):
        assert sw[name]["status"] == f"skipped: {name} (needs CUDA)"
    assert sw["plain"]["status"] == "ok" and sw["plain"]["speedup_vs_plain"] == 1.0
    assert all(len(sw[n]["rounds"]) == 2 for n in ("plain", "channels_last", "compile", "all"))  # interleaved rounds
    assert sw["plain"]["did"]["compiled"] == [] and sw["plain"]["did"]["channels_last"] is None
    assert sw["plain"]["did"]["autocast"] is None and sw["plain"]["did"]["optimizer"] == "AdamW"
    cl = sw["channels_last"]
    assert cl["status"] == "ok" and cl["applied"] == ["channels_last"] and "conv weight(s)" in cl["did"]["channels_last"]
    assert cl["did"]["compiled"] == [] and cl["speedup_vs_plain"] > 0
    assert sw["compile"]["status"] == "ok" and sw["compile"]["did"]["compiled"] == ["encoder", "broad_encoder"]
    assert sw["all"]["applied"] == ["channels_last", "compile"]
    assert sw["all"]["skipped"] == ["bf16 (needs CUDA)", "tf32 (needs CUDA)", "fused_adamw (needs CUDA)"]
    assert sw["all"]["did"]["compiled"] == ["encoder", "broad_encoder"] and sw["all"]["did"]["channels_last"]


def test_bench_train_unknown_switch_is_a_clear_error():
    r = subprocess.run([sys.executable, "-m", "videossl.cli", "bench", "train", "--config", "recipes/brave/synthetic.yaml",
                        "--device", "cpu", "--switches", "plain,turbo"], capture_output=True, text=True, cwd=REPO,
                       timeout=300, env=_env())
    assert r.returncode != 0 and "--switches: unknown turbo" in r.stderr


def test_bench_train_channels_last_on_a_vivit_is_reported_as_a_no_op_not_timed(tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, "-m", "videossl.cli", "bench", "train", "--config",
                        "recipes/long_video/synthetic_video_only.yaml", "--device", "cpu", "--batch-size", "2", "--steps", "1",
                        "--warmup", "1", "--rounds", "1", "--switches", "channels_last", "--json", str(out)],
                       capture_output=True, text=True, cwd=REPO, timeout=300, env=_env())
    assert r.returncode == 0, r.stderr[-2000:]
    sw = json.loads(out.read_text())["switches"]
    assert sw["plain"]["status"] == "ok" and sw["plain"]["did"]["optimizer"] == "AdamW"
    assert sw["channels_last"]["status"] == "skipped: encoder: no-op (ViViT has 1 conv layer(s): not a conv encoder)"


def test_bench_train_batch_carries_the_broad_windows_spectrogram_and_feeds_every_broad_backbone():
    """A V/AF recipe: the random batch has the spectrogram the reader would cut (BraVe's window: frames x stride /
    fps), and the plain-torch reference feeds each broad backbone its own modality's input."""
    import torch

    from videossl.bench.train import build, random_batch, reference_inputs

    model, views, bs, audio = build("recipes/brave/synthetic_vaf.yaml", 2)
    assert audio == {"view": "broad", "sample_rate": 16000, "channels": 2, "missing": "skip"}
    batch = random_batch(views, bs, "cpu", audio, fps=12.0)
    broad = next(v for v in views if v["name"] == "broad")
    frames = -(-round(broad["frames"] * broad["stride"] / 12.0 * 16000) // 160)  # ceil(samples / hop)
    assert batch["spectrogram"].shape == (2, 2, frames, 80) and batch["has_audio"].all()
    encoders, inputs = reference_inputs(model, batch)
    assert encoders[1:] == [model.broad_encoders["audio"], model.broad_encoders["flow_est"]]
    assert inputs[1] is batch["spectrogram"] and inputs[2].shape[1] == 2  # flow: 2 channels
    assert all(enc(x).shape == (2, enc.feature_dim) for enc, x in zip(encoders, inputs, strict=True))
    loss, _, logs = model.ssl_step(batch)
    assert torch.isfinite(loss) and "n_video_to_b_flow_est" in logs
