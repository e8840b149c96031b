"""#18 acceptance: `videossl convert` a random-init reference model, then `videossl eval linear --weights FILE`
(no --encoder) on the tiny synthetic set; the report names the source, the conversion and the file's hash."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch

from videossl.core.checkpoint import read_encoder_meta
from videossl.eval.runs import file_hash

try:
    from .conftest import TINY_VIEW, write_yaml
except ImportError:  # tests/eval is not a package
    from conftest import TINY_VIEW, write_yaml

SPEC_CLASS = "videossl.models.vivit.ViViT"


def recipe(tmp: Path, data: Path, view: dict) -> Path:
    return write_yaml(tmp / "eval.yaml", {
        "data_dir": str(data), "views": [view], "batch_size": 8, "num_workers": 0,
        "probe": {"kind": "softmax", "optimizer": "lbfgs", "epochs": 20, "weight_decay": 1e-2}})


def convert_then_linear(tmp_path: Path, data: Path, videossl_main, convert_args: list[str], view: dict) -> tuple[Path, dict, str]:
    """`videossl convert ... --out enc.pt`, then `eval linear --weights enc.pt`: (enc.pt, results.json, report.md)."""
    enc = tmp_path / "enc.pt"
    assert videossl_main(["convert", *convert_args, "--out", str(enc)]) == 0
    out = tmp_path / "linear"
    assert videossl_main(["eval", "linear", "--config", str(recipe(tmp_path, data, view)), "--weights", str(enc),
                          "--out", str(out)]) == 0
    return enc, json.loads((out / "results.json").read_text()), (out / "report.md").read_text()


def check_result(enc: Path, res: dict, report: str, source: str, note: str, init_args: dict) -> None:
    meta = read_encoder_meta(enc)
    assert meta["source"] == source and meta["conversion"] == note
    ref = Path(meta["source_path"])  # the reference weight file that was converted, named with its hash
    ref_hash = "sha256:" + hashlib.sha256(ref.read_bytes()).hexdigest()
    assert meta["source_hash"] == ref_hash
    named = f"{source} {ref} ({ref_hash}) (encoder file)"
    assert res["encoder"] == {"class_path": SPEC_CLASS, "init_args": meta["spec"]["init_args"]}
    for k, v in init_args.items():
        assert res["encoder"]["init_args"][k] == v, k
    w = res["weights"]
    assert w["source"] == named and w["conversion"] == note
    assert w["missing"] == [] and w["unexpected"] == [] and w["loaded"] > 0
    assert res["checkpoint"] == str(enc) and res["checkpoint_sha256"] == file_hash(enc) == w["sha256"]
    for needle in (f"backbone: {SPEC_CLASS} ", f"- weights source: {named}", f"- conversion: {note}",
                   f"- checkpoint: {enc} (sha256 {file_hash(enc)})", "0 missing, 0 unexpected"):
        assert needle in report, needle
    [row] = res["results"]
    assert row["name"] == "pretrained"
    top1 = row["top1"]
    assert isinstance(top1, int | float) and not math.isnan(top1) and 0.0 <= top1 <= 100.0, top1


def test_eval_linear_on_a_converted_hf_videomae(tmp_path, synth48, videossl_main):
    transformers = pytest.importorskip("transformers")
    v = TINY_VIEW  # 4 frames at 24 px
    cfg = transformers.VideoMAEConfig(image_size=v["size"], patch_size=8, num_frames=v["frames"], tubelet_size=2,
                                      hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    torch.manual_seed(0)
    transformers.VideoMAEModel(cfg).eval().save_pretrained(tmp_path / "hf")
    enc, res, report = convert_then_linear(tmp_path, synth48, videossl_main,
                                           ["--from", "hf-videomae", str(tmp_path / "hf")], v)
    check_result(enc, res, report, "hf-videomae", "VideoMAE: fixed sin-cos positions, zero key bias",
                 {"embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": 24, "num_frames": 4})


def test_eval_linear_on_an_inflated_timm_vit(tmp_path, synth48, videossl_main):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    torch.save(ref.state_dict(), tmp_path / "vit.pt")
    view = {**TINY_VIEW, "size": 32}  # 2 x 2 patches of 16 px; the set is 32 px
    enc, res, report = convert_then_linear(
        tmp_path, synth48, videossl_main,
        ["--from", "timm-vit", str(tmp_path / "vit.pt"), "--model", "vit_tiny_patch16_224", "--frames", "4",
         "--size", "32"], view)
    check_result(enc, res, report, "timm-vit", "timm ViT inflated (mean) to 4 frames",
                 {"img_size": 32, "num_frames": 4})
