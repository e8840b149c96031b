"""BraVe V/AF through `videossl fit` (two broad views: the sound and the estimated flow of the broad window, each with
its own backbone and head pair): the four terms are logged, kill-and-resume is exact, 2-process DDP keeps the
ranks equal, and `eval audio --run RUN --part audio` reads the trained audio backbone out of the run.

A tiny synthetic set with sound (32 px, 8 frames, stereo 16 kHz) and tiny views, so each run takes seconds.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.methods._fit import REPO, kill_and_resume, last_state, max_weight_difference, run_videossl
from videossl.data.shards.synthetic import generate

NARROW = {"class_path": "videossl.models.Small3D", "init_args": {"width": 8}}
BROAD = {"audio": {"class_path": "videossl.models.SmallAudio2D", "init_args": {"width": 8, "in_channels": 2}},
         "flow_est": {"class_path": "videossl.models.Small3D", "init_args": {"width": 8, "in_channels": 2}}}
TINY = [
    "--data.batch_size", "8",
    "--data.num_workers", "0",
    "--data.train_views", json.dumps([
        {"name": "narrow", "sampler": "narrow", "frames": 4, "stride": 1, "size": 24, "augment": {"flip_p": 0.0, "blur_p": 0.0}},
        {"name": "broad", "sampler": "broad", "frames": 8, "stride": 1, "size": 16, "augment": {"flip_p": 0.0, "blur_p": 0.0}},
    ]),
    "--data.eval_views", json.dumps([{"name": "clip", "sampler": "uniform", "frames": 4, "stride": 1, "size": 24,
                                      "train": False}]),
    "--model.init_args.narrow_encoder", json.dumps(NARROW),
    "--model.init_args.broad_encoders", json.dumps(BROAD),
    "--model.init_args.proj_hidden", "32",
    "--model.init_args.pred_hidden", "32",
    "--model.init_args.out_dim", "16",
    "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false",
]
TERMS = ["b_audio_to_n_video", "n_video_to_b_audio", "b_flow_est_to_n_video", "n_video_to_b_flow_est"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth-audio")
    generate(out, 64, seed=1, size=32, num_frames=8, progress=False, audio=True)  # 48 train videos with sound
    return out


def fit(run: Path, data: Path, *extra: str):
    return run_videossl("fit", "--config", str(REPO / "recipes/brave/synthetic_vaf.yaml"), "--data.data_dir", str(data),
                        "--trainer.default_root_dir", str(run), *TINY, *extra)


def test_vaf_logs_four_terms_whose_mean_is_the_loss_and_resumes_exactly(tmp_path, synth):
    common = ["--model.init_args.optim.total", "9", "--trainer.log_every_n_steps", "1"]
    a, b, resumed = kill_and_resume(fit, tmp_path, synth, 3, 9, *common)  # "killed" after step 3
    assert "resuming from" in resumed
    assert max_weight_difference(a, b) <= 1e-6
    assert any(k.startswith("broad_encoders.audio.") for k in a) and any(k.startswith("broad_encoders.flow_est.") for k in a)
    rows = [x for x in csv.DictReader(open(tmp_path / "a" / "metrics.csv")) if x.get("train/loss_step")]
    assert len(rows) == 9
    for row in rows:
        terms = [float(row[f"train/{t}_step"]) for t in TERMS]
        assert float(row["train/loss_step"]) == pytest.approx(sum(terms) / 4, abs=1e-5)


def test_vaf_ddp_two_cpu_processes_keep_equal_weights(tmp_path, synth):
    check = ["--trainer.callbacks+=videossl.callbacks.WeightSyncCheck", "--trainer.max_epochs", "1"]
    fit(tmp_path / "two", synth, "--trainer.devices", "2", "--trainer.strategy", "ddp", *check)
    two = json.loads((tmp_path / "two" / "weight_sync.json").read_text())
    assert two["world_size"] == 2 and len(two["hashes"]) == 2
    assert two["equal"], two["hashes"]
    assert two["global_step"] == 3  # 48 videos / (2 ranks x batch 8)


def test_eval_audio_reads_the_vaf_runs_audio_backbone(tmp_path, synth):
    fit(tmp_path / "run", synth, "--trainer.max_steps", "2")
    out = tmp_path / "eval"
    run_videossl("eval", "audio", "--config", str(REPO / "recipes/eval/audio/synthetic.yaml"), "--run", str(tmp_path / "run"),
                 "--part", "audio", "--data-dir", str(synth), "--out", str(out), "--no-cache")
    res = json.loads((out / "results.json").read_text())
    assert res["encoder"]["class_path"] == "videossl.models.SmallAudio2D"
    assert res["weights"]["conversion"] == "prefix 'broad_encoders.audio.'"
    n_audio = sum(k.startswith("broad_encoders.audio.") for k in last_state(tmp_path / "run"))
    assert res["weights"]["loaded"] == n_audio > 0 and not res["weights"]["missing"] and not res["weights"]["unexpected"]
    r = run_videossl("eval", "audio", "--config", str(REPO / "recipes/eval/audio/synthetic.yaml"), "--run",
                     str(tmp_path / "run"), "--part", "sound", "--data-dir", str(synth), "--out", str(out), check=False)
    assert r.returncode != 0 and "its parts: video, audio, flow_est" in r.stderr
