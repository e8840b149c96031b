"""`videossl eval online`: per-frame accuracy, FLOPs, timing and the reversal-pair score on a tiny synthetic set."""

from __future__ import annotations

import json
from pathlib import Path

from tests.eval.conftest import one_error_line, write_yaml

REPO = Path(__file__).resolve().parents[2]


def _recipe(tmp_path: Path, synth48: Path) -> Path:
    view = {"name": "stream", "sampler": "uniform", "frames": 8, "stride": 1, "size": 16, "train": False,
            "num_clips": 1, "crops": 1}
    return write_yaml(tmp_path / "sideways.yaml", {
        "compose": [str(REPO / "recipes/streaming/sideways.yaml")],
        "data": {"data_dir": str(synth48), "num_workers": 0, "eval_batch_size": 8, "eval_views": [view]},
        "model": {"init_args": {"backbone": {"class_path": "videossl.models.pipelined.FrameCNN",
                                             "init_args": {"width": 8, "depth": 4, "in_channels": 3, "norm": True}}}}})


def test_eval_online_scores_the_translate_pair_both_ways(tmp_path, synth48, capsys):
    from videossl.cli import main

    out = tmp_path / "out"
    rc = main(["eval", "online", "--config", str(_recipe(tmp_path, synth48)), "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    pair = res["reversal_pair"]
    assert pair["classes"] == ["translate_left", "translate_right"]
    # Sideways without skips on RGB frames sees one frame per output: exactly one half, whatever the weights
    assert pair["scored"] > 0 and pair["acc"] == 0.5
    assert len(res["acc_per_frame_index"]) == 8 and res["weights"] == "random init"


def test_eval_online_rejects_an_unknown_reversal_pair(tmp_path, synth48, capsys):
    from videossl.cli import main

    rc = main(["eval", "online", "--config", str(_recipe(tmp_path, synth48)), "--out", str(tmp_path / "o"),
               "--reversal-pair", "translate_left", "jumping"])
    assert "jumping" in one_error_line(capsys, rc)


def test_every_streaming_recipe_builds_and_streams(tmp_path, synth48, capsys):
    """Each recipes/streaming/*.yaml as a user runs it (its own backbone), scored at random init on 12 frames."""
    from videossl.cli import main

    view = {"name": "stream", "sampler": "uniform", "frames": 12, "stride": 1, "size": 16, "train": False,
            "num_clips": 1, "crops": 1}
    for recipe in sorted((REPO / "recipes" / "streaming").glob("*.yaml")):
        cfg = write_yaml(tmp_path / f"{recipe.stem}.yaml", {
            "compose": [str(recipe)],
            "data": {"data_dir": str(synth48), "num_workers": 0, "eval_batch_size": 8, "eval_views": [view]}})
        out = tmp_path / recipe.stem
        rc = main(["eval", "online", "--config", str(cfg), "--out", str(out), "--max-batches", "1"])
        assert rc == 0, (recipe.name, capsys.readouterr().err)
        res = json.loads((out / "results.json").read_text())
        lagged = res["lagged_skips"]
        assert res["first_scored_tick"] == (7 if lagged else 3), recipe.name
        if res["mode"] != "sequential":  # the pipe (and a delay line) fills first: no output, nothing right
            first = res["first_scored_tick"]
            assert res["delay_per_tick"][:first] == [None] * first, recipe.name
            if set(res["clocks"]) == {1}:
                assert None not in res["delay_per_tick"][first:], recipe.name
            assert all(a == 0 for a in res["acc_per_frame_index"][:first]), recipe.name
