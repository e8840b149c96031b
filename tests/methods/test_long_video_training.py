"""The masked long-video method through `videossl fit`: a run killed mid-epoch and resumed reaches the
weights of an uninterrupted run (token masks, playing direction and prompts come from the per-step
generator, not the global RNG, which no checkpoint holds)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from tests.methods._fit import REPO, kill_and_resume, last_state, max_weight_difference, run_videossl, tiny_synth

TINY = [
    "--data.batch_size", "8",
    "--data.train_views", json.dumps([{"name": "clip", "sampler": "random", "frames": 4, "stride": 2, "size": 16,
                                       "augment": {"flip_p": 0.0, "jitter_p": 0.0, "grayscale_p": 0.0, "blur_p": 0.0}}]),
    "--data.eval_views", json.dumps([{"name": "clip", "sampler": "uniform", "frames": 4, "stride": 2, "size": 16,
                                      "train": False}]),
    "--model.init_args.encoder.init_args.img_size", "16",
    "--model.init_args.encoder.init_args.num_frames", "4",
    "--model.init_args.encoder.init_args.embed_dim", "32",
    "--model.init_args.encoder.init_args.depth", "2",
    "--model.init_args.encoder.init_args.num_heads", "2",
    "--model.init_args.encoder.init_args.tubelet", "[2, 8, 8]",
    "--model.init_args.text_encoder.init_args.embed_dim", "32",
    "--model.init_args.text_encoder.init_args.num_heads", "2",
    "--model.init_args.embed_dim", "32",
    "--model.init_args.proj_hidden", "32",
    "--model.init_args.hard_negative_count", "2",
    "--model.init_args.optim.total", "9",
    "--model.init_args.optim.warmup", "2",  # in steps: a fraction would be of each invocation's max_steps
    "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false",
    "--trainer.check_val_every_n_epoch", "100",
]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return tiny_synth(tmp_path_factory)


def fit(run: Path, data: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_videossl("fit", "--config", str(REPO / "recipes/long_video/synthetic.yaml"), "--data.data_dir", str(data),
                        "--trainer.default_root_dir", str(run), *TINY, *extra)


_state = last_state


def _without_text(args: list[str]) -> list[str]:
    """``args`` less its ``--model.init_args.text_encoder.*`` flags (and their values)."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a.startswith("--model.init_args.text_encoder."):
            skip = True
        else:
            out.append(a)
    return out


def test_long_video_kill_and_resume_reaches_the_same_weights(tmp_path, synth):
    """Stopped at step 4 (mid-epoch, 6 batches per epoch) and resumed = an uninterrupted 9-step run."""
    common = ["--data.num_workers", "2"]
    a, b, resumed = kill_and_resume(fit, tmp_path, synth, 4, 9, *common)  # "killed" after step 4
    assert "resuming from" in resumed
    assert max_weight_difference(a, b) <= 1e-6


def test_stage2_on_the_long_synthetic_set_from_stage1(tmp_path, synth):
    """Stage 1 on short clips, then the stage-2 CPU recipe on long videos (128 frames at 1 fps from the start,
    75 % of the tokens dropped): only the last blocks, the final norm, the heads and the temporal table move."""
    from videossl.data.shards.synthetic_long import generate_long

    small = ["--model.init_args.encoder.init_args.img_size", "32", "--model.init_args.encoder.init_args.embed_dim", "32",
             "--model.init_args.encoder.init_args.depth", "2", "--model.init_args.encoder.init_args.num_heads", "2",
             "--model.init_args.text_encoder.init_args.embed_dim", "32",
             "--model.init_args.text_encoder.init_args.num_heads", "2",
             "--model.init_args.embed_dim", "32", "--model.init_args.proj_hidden", "32",
             "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false", "--data.num_workers", "0"]
    clip = {"flip_p": 0.0, "jitter_p": 0.0, "grayscale_p": 0.0, "blur_p": 0.0}
    stage1 = ["--config", str(REPO / "recipes/long_video/synthetic.yaml"), "--data.data_dir", str(synth),
              "--data.train_views", json.dumps([{"name": "clip", "sampler": "random", "frames": 4, "stride": 2, "size": 32,
                                                 "augment": clip}]),
              "--data.eval_views", json.dumps([{"name": "clip", "sampler": "uniform", "frames": 4, "stride": 2, "size": 32,
                                                "train": False}]),
              "--model.init_args.encoder.init_args.num_frames", "4", "--trainer.max_steps", "2",
              "--trainer.default_root_dir", str(tmp_path / "s1"), "--trainer.check_val_every_n_epoch", "100"]
    long = tmp_path / "long"
    generate_long(long, 24, seed=1, size=32, num_frames=8, progress=False)  # 8 train videos
    stage2 = ["--config", str(REPO / "recipes/long_video/stage2_synthetic_long.yaml"), "--data.data_dir", str(long),
              "--data.batch_size", "4", "--data.train_views",
              json.dumps([{"name": "clip", "sampler": "long", "frames": 128, "target_fps": 1.0, "size": 32,
                           "random_start": False, "augment": clip}]),
              "--data.eval_views", json.dumps([{"name": "clip", "sampler": "long", "frames": 128, "target_fps": 1.0,
                                                "size": 32, "train": False}]),
              "--model.init_args.encoder.init_args.trainable_blocks", "1", "--trainer.max_steps", "2",
              "--model.init_args.init_from", str(tmp_path / "s1" / "checkpoints" / "last.ckpt"),
              "--trainer.default_root_dir", str(tmp_path / "s2"), "--trainer.check_val_every_n_epoch", "100"]
    text2 = ["--model.init_args.text_encoder.init_args.base.init_args.embed_dim", "32",  # the clause head over stage 1's tower
             "--model.init_args.text_encoder.init_args.base.init_args.num_heads", "2",
             "--model.init_args.text_encoder.init_args.num_heads", "2"]
    run_videossl("fit", *stage1, *small)
    run_videossl("fit", *stage2, *_without_text(small), *text2)
    s1, s2 = _state(tmp_path / "s1"), _state(tmp_path / "s2")
    assert s2["encoder.pos_temporal"].shape[1] == 64  # 128 frames / tubelet 2 (interpolated from 2)
    moved = {k for k in s2 if k in s1 and s1[k].shape == s2[k].shape and not torch.equal(s1[k], s2[k])}
    assert any(k.startswith("encoder.blocks.1.") for k in moved) and any(k.startswith("encoder.norm.") for k in moved)
    assert not any(k.startswith(("encoder.blocks.0.", "encoder.patch_embed.")) for k in moved), moved
    # stage 1's text tower is the frozen base of stage 2's clause head, which trains
    base = {k[len("text_encoder."):] for k in s1 if k.startswith("text_encoder.")}
    assert base and all(torch.equal(s1[f"text_encoder.{k}"], s2[f"text_encoder.base.{k}"]) for k in base)
    assert "text_encoder.pos" in s2 and any(k.startswith("text_encoder.blocks.0.") for k in s2)
