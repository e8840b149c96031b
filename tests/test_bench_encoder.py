"""`videossl bench encoder` on CPU with a tiny model prints the table."""

import argparse

from videossl.bench import encoder as bench


def test_bench_encoder_cpu_tiny(tmp_path, capsys):
    p = argparse.ArgumentParser()
    bench.add_cli_arguments(p)
    args = p.parse_args(["--model", "vivit-tiny", "--device", "cpu", "--size", "32", "--depth", "1", "--frames", "2,4",
                         "--mask", "0,0.75", "--steps", "1", "--warmup", "0", "--out", str(tmp_path)])
    assert bench.run_cli(args) == 0
    out = capsys.readouterr().out
    assert "bench encoder" in out and "ref_step_s" in out
    csv = (tmp_path / "encoder_bench.csv").read_text().splitlines()
    assert len(csv) == 5  # header + 2 frames x 2 masks
    assert (tmp_path / "encoder_bench.md").is_file()
    row = bench.bench_cell("vivit-tiny", 8, 0.75, size=32, batch=1, steps=1, warmup=0, device=__import__("torch").device("cpu"),
                           dtype=None, trainable_blocks=None, grad_ckpt=False, reference=False, depth=1)
    assert row["tokens"] == 16 and row["kept"] == row["seen_tokens"] == 4  # 4 steps x 2x2 grid of 16-px patches


def test_cpu_memory_is_measured_per_process_and_falls_with_masking(tmp_path, capsys):
    p = argparse.ArgumentParser()
    bench.add_cli_arguments(p)
    args = p.parse_args(["--model", "vivit-tiny", "--device", "cpu", "--size", "64", "--depth", "2", "--frames", "64",
                         "--mask", "0,0.75", "--steps", "1", "--warmup", "1", "--cpu-memory", "--no-reference",
                         "--out", str(tmp_path)])
    assert bench.run_cli(args) == 0
    import csv

    rows = list(csv.DictReader(open(tmp_path / "encoder_bench.csv")))
    mem = [float(r["mem_mib"]) for r in rows]
    assert all(m > 0 for m in mem)
    assert mem[0] > 1.5 * mem[1], mem  # 512 vs 128 tokens: the unmasked step holds far more activations
    assert "mem_mib falls as masking rises" in capsys.readouterr().out
