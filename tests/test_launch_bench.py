"""`videossl launch slurm --dry-run` writes a correct sbatch script; `videossl bench train` runs on CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


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
