"""tools/gpu_check.sh stays runnable: its dry run prints the plan and records every CUDA step as skipped."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_writes_the_plan(tmp_path):
    r = subprocess.run(["bash", "tools/gpu_check.sh", "--dry-run", "--out", str(tmp_path)], capture_output=True,
                       text=True, cwd=REPO, env={"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["dry_run"] and [s["step"] for s in report["steps"]] == ["env", "gpu-tests", "brave", "vivit",
                                                                            "encoder", "data"]
    assert all(s["status"] == "skipped (dry run)" for s in report["steps"])
    assert "bench encoder --model vivit-b --frames 16,32,64,128,256" in (tmp_path / "gpu_check.md").read_text()
    assert "--switches plain,bf16,tf32,channels_last,compile,all" in (tmp_path / "gpu_check.md").read_text()
    part = tmp_path / "part"
    r = subprocess.run(["bash", "tools/gpu_check.sh", "--dry-run", "--only", "vivit,data", "--out", str(part)],
                       capture_output=True, text=True, cwd=REPO,
                       env={"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert [s["step"] for s in json.loads((part / "gpu_check.json").read_text())["steps"]] == ["vivit", "data"]
    bad = subprocess.run(["bash", "tools/gpu_check.sh", "--nope"], capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and "unknown option" in bad.stderr


def test_every_command_of_the_gpu_check_parses_its_options(tmp_path):
    """Each bench step's options exist (a renamed flag would only fail on the GPU machine otherwise), and so do
    the switches it names."""
    script = (REPO / "tools" / "gpu_check.sh").read_text()
    for sub, flags in (("bench train", ["--config", "--device", "--steps", "--warmup", "--json", "--switches", "--rounds"]),
                       ("bench encoder", ["--model", "--frames", "--mask", "--device", "--dtype", "--out"]),
                       ("bench data", ["--config", "--data-dir", "--augment", "--workers", "--clips"])):
        assert sub in script
        help_text = subprocess.run([sys.executable, "-m", "videossl.cli", *sub.split(), "--help"], capture_output=True,
                                   text=True, cwd=REPO).stdout
        assert all(f in help_text for f in flags), (sub, [f for f in flags if f not in help_text])
    from videossl.bench.train import parse_switches

    for line in script.splitlines():
        if "--switches " in line:
            parse_switches(line.split("--switches ", 1)[1].split()[0])  # raises on an unknown switch
