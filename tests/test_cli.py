"""The `videossl` command: help at every level, one clear line for bad input, and the data tools."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from videossl.cli import COMMANDS, main


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "videossl.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_top_level_help_lists_groups():
    r = run("--help")
    assert r.returncode == 0
    assert "data" in r.stdout and "videossl data synth" in r.stdout


@pytest.mark.parametrize("group,name", sorted({(g, n) for g, n, _, _ in COMMANDS}))
def test_every_subcommand_has_help(group, name, capsys):
    with pytest.raises(SystemExit) as e:
        main([group, name, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert f"videossl {group} {name}" in out and "example" in out.lower()


def test_group_without_subcommand_prints_its_help(capsys):
    assert main(["data"]) == 0
    assert "synth" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--num-videos", "0"], "--num-videos must be at least 1"),
        (["--size", "-8"], "--size must be a positive"),
        (["--size", "33"], "even"),
        (["--frames", "1"], "--frames must be at least 2"),
        (["--audio", "--audio-rate", "8000"], "--audio-rate must be one of"),
        (["--audio-rate", "16000"], "--audio-rate needs --audio"),
    ],
)
def test_synth_bad_input_is_one_clear_line(tmp_path, args, needle):
    r = run("data", "synth", "--out", str(tmp_path / "o"), "--no-progress", *args)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0, r.stderr
    assert needle in r.stderr


def test_synth_unwritable_output_is_one_clear_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    r = run("data", "synth", "--out", str(blocker / "sub"), "--num-videos", "4", "--no-progress")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0
    assert "cannot write to output folder" in r.stderr


def test_inspect_missing_folder_and_non_shard_folder(tmp_path):
    r = run("data", "inspect", str(tmp_path / "nope"))
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
    r = run("data", "inspect", str(tmp_path))
    assert r.returncode == 2 and "not a videossl shard set" in r.stderr


def test_synth_inspect_preview_end_to_end(tmp_path):
    out = tmp_path / "synth"
    r = run("data", "synth", "--out", str(out), "--num-videos", "24", "--size", "32", "--frames", "6",
            "--workers", "2", "--no-progress")
    assert r.returncode == 0, r.stderr
    r = run("data", "inspect", str(out), "--verify", "--json", str(tmp_path / "report.json"))
    assert r.returncode == 0, r.stderr + r.stdout
    assert "translate_left" in r.stdout and "zoom_out" in r.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["splits"] == report["scanned"] and sum(report["splits"].values()) == 24
    assert report["bad"] == []
    png = tmp_path / "p.png"
    r = run("data", "preview", str(out), "--out", str(png), "--videos", "2", "--frames", "3")
    assert r.returncode == 0, r.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_fit_refuses_a_view_the_vivit_is_not_built_for(tmp_path):
    """A recipe states the clip size twice (view frames/size, ViViT num_frames/img_size): a mismatch is one line."""
    r = run("fit", "--config", "recipes/long_video/synthetic.yaml", "--data.data_dir", str(tmp_path / "none"),
            "--trainer.default_root_dir", str(tmp_path / "r"), "--model.init_args.encoder.init_args.num_frames", "16")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "data view 'clip' is 8 frames at 48 px but the encoder is built for num_frames=16" in r.stderr
