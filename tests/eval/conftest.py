"""Shared fixtures of the eval tests: a tiny synthetic shard set, a briefly BraVe-trained run, and
the `videossl eval` commands registered in-process (whether or not videossl/cli.py lists them yet)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

EVAL_COMMANDS = [
    ("eval", "knn", "videossl.eval.commands.knn", "weighted kNN and retrieval of a frozen encoder"),
    ("eval", "finetune", "videossl.eval.commands.finetune", "fine-tune an encoder end to end; multi-view test and report"),
    ("eval", "compare", "videossl.eval.commands.compare", "several eval results side by side (Markdown + table)"),
]

TINY_VIEW = {"name": "clip", "sampler": "uniform", "frames": 4, "stride": 1, "size": 24, "train": False,
             "num_clips": 2, "crops": 1}


class ChannelMean(nn.Module):
    """A deterministic 'encoder': per-channel mean of the clip plus its square (so features are not collinear)."""

    feature_dim = 6

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))  # one tensor so the encoder has a state dict

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W)
        m = x.mean(dim=(2, 3, 4)) * self.scale
        return torch.cat([m, m * m], dim=1)


@pytest.fixture
def videossl_main(monkeypatch):
    """``videossl.cli.main`` with the eval commands registered."""
    import videossl.cli as cli

    have = {(g, n) for g, n, _, _ in cli.COMMANDS}
    monkeypatch.setattr(cli, "COMMANDS", cli.COMMANDS + [c for c in EVAL_COMMANDS if c[:2] not in have])
    return cli.main


@pytest.fixture(scope="session")
def synth48(tmp_path_factory) -> Path:
    from videossl.data.shards.synthetic import generate

    out = tmp_path_factory.mktemp("synth48")
    generate(out, 48, size=32, num_frames=8, progress=False)  # 32 train / 8 val / 8 test, 8 classes
    return out


@pytest.fixture(scope="session")
def brave_run(tmp_path_factory, synth48) -> Path:
    """`videossl fit` of BraVe (two width-4 Small3D) for 2 steps, in-process: config.yaml, encoder.pt, last.ckpt."""
    import warnings

    from videossl.train import run_lightning

    run = tmp_path_factory.mktemp("brave-run")
    repo = Path(__file__).resolve().parents[2]
    args = [
        "--config", str(repo / "recipes/brave/synthetic.yaml"),
        "--data.data_dir", str(synth48), "--trainer.default_root_dir", str(run),
        "--data.batch_size", "8", "--data.num_workers", "0",
        "--data.train_views", json.dumps([
            {"name": "narrow", "sampler": "narrow", "frames": 4, "stride": 1, "size": 24,
             "augment": {"flip_p": 0.0, "blur_p": 0.0}},
            {"name": "broad", "sampler": "broad", "frames": 8, "stride": 1, "size": 16,
             "augment": {"flip_p": 0.0, "blur_p": 0.0}}]),
        "--data.eval_views", json.dumps([TINY_VIEW]),
        "--model.init_args.narrow_encoder", json.dumps({"class_path": "videossl.models.Small3D", "init_args": {"width": 4}}),
        "--model.init_args.broad_encoder", json.dumps({"class_path": "videossl.models.Small3D", "init_args": {"width": 4}}),
        "--model.init_args.proj_hidden", "16", "--model.init_args.pred_hidden", "16", "--model.init_args.out_dim", "8",
        "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false", "--fresh",
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert run_lightning("fit", args) == 0
    assert (run / "encoder.pt").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    return run


def write_yaml(path: Path, d: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


def one_error_line(capsys, rc: int) -> str:
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("videossl: error: "), err
    assert "Traceback" not in err
    return lines[0]
