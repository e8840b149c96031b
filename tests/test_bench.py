"""`videossl bench data` smoke test: a tiny generated shard set, few clips, no timing thresholds."""

from __future__ import annotations

import json

import pytest

from videossl.cli import main


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench-synth")
    assert main(["data", "synth", "--out", str(d / "shards"), "--num-videos", "24", "--size", "32", "--frames", "16",
                 "--workers", "1", "--max-per-shard", "8"]) == 0
    recipe = d / "recipe.yaml"
    recipe.write_text(
        f"data:\n  data_dir: {d / 'shards'}\n  batch_size: 2\n  shuffle_buffer: 4\n"
        "  train_views:\n    - {name: clip, sampler: random, frames: 8, stride: 1, size: 16}\n"
    )
    return recipe


def test_bench_data_prints_three_rates_and_ratios(tiny_set, tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main(["bench", "data", "--config", str(tiny_set), "--clips", "4", "--workers", "0", "1", "--naive-clips", "2",
               "--leak-clips", "5", "--rss-every", "2", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    for needle in ("pipeline", "raw decode", "naive PyAV", "vs raw", "vs naive", "RSS", "decode loop"):
        assert needle in text, needle
    res = json.loads(out.read_text())
    assert res["raw"]["clips_per_s"] > 0 and res["naive"]["clips_per_s"] > 0
    runs = res["pipeline"]
    assert {(r["augment"], r["workers"]) for r in runs} == {(a, w) for a in ("cpu", "gpu-split") for w in (0, 1)}
    for r in runs:
        assert r["clips"] >= 4 and r["clips_per_s"] > 0 and r["frames_per_s"] > 0
        assert r["vs_raw"] > 0 and r["vs_naive"] > 0 and r["per_worker_vs_raw"] > 0
        assert r["rss"] and all(s["main_mb"] > 0 for s in r["rss"])
    assert res["leak"]["iterations"] == 5


def test_bench_data_bad_config_is_a_clear_error(tmp_path, capsys):
    assert main(["bench", "data", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
