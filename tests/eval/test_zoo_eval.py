"""One way in (#18): `eval linear|knn|finetune --encoder NAME --weights FILE|ENUM` for torchvision's zoo and
encoder files, with the weights' source, conversion and hash in the report's protocol block."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torchvision.models.video as tvv

from videossl.core.checkpoint import save_encoder_file
from videossl.eval.runs import file_hash
from videossl.models import Small3D

try:
    from .conftest import TINY_VIEW, one_error_line, write_yaml
except ImportError:  # tests/eval is not a package
    from conftest import TINY_VIEW, one_error_line, write_yaml

R3D_MEAN, R3D_STD = [0.43216, 0.394666, 0.37645], [0.22803, 0.22145, 0.216989]


def recipe(tmp: Path, data: Path, **over) -> Path:
    d = {"data_dir": str(data), "views": [TINY_VIEW], "batch_size": 8, "num_workers": 0,
         "probe": {"kind": "softmax", "optimizer": "lbfgs", "epochs": 20, "weight_decay": 1e-2},
         "knn": {"k": [5], "retrieval_ks": [1]}}
    d.update(over)
    return write_yaml(tmp / "eval.yaml", d)


def fake_hub_download(tmp_path: Path, monkeypatch) -> tuple[Path, torch.nn.Module]:
    """torchvision's r3d_18 with random weights, saved where torch.hub keeps R3D_18_Weights.KINETICS400_V1."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.manual_seed(0)
    ref = tvv.r3d_18(weights=None)
    path = tmp_path / "torch" / "hub" / "checkpoints" / "r3d_18-b3b3357e.pth"
    path.parent.mkdir(parents=True)
    torch.save(ref.state_dict(), path)
    return path, ref


def test_eval_linear_with_a_torchvision_zoo_model_names_source_and_conversion(tmp_path, synth48, videossl_main,
                                                                              monkeypatch, capsys):
    path, _ = fake_hub_download(tmp_path, monkeypatch)
    view = {**TINY_VIEW, "augment": {"mean": R3D_MEAN, "std": R3D_STD}}
    cfg = recipe(tmp_path, synth48, views=[view])
    out = tmp_path / "linear"
    assert videossl_main(["eval", "linear", "--config", str(cfg), "--encoder", "tv-r3d_18", "--weights",
                          "KINETICS400_V1", "--compare-random", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["encoder"] == {"class_path": "videossl.models.tv_zoo.TorchvisionVideoEncoder", "init_args": {"arch": "r3d_18"}}
    assert [r["name"] for r in res["results"]] == ["pretrained", "random-init"]
    assert res["checkpoint"] == str(path) and res["checkpoint_sha256"] == file_hash(path)
    w = res["weights"]
    assert w["source"] == f"torchvision R3D_18_Weights.KINETICS400_V1 ({path})"
    assert w["missing"] == [] and w["unexpected"] == [] and w["loaded"] == len(tvv.r3d_18().state_dict()) - 2
    report = (out / "report.md").read_text()
    for needle in ("backbone: videossl.models.tv_zoo.TorchvisionVideoEncoder {\"arch\": \"r3d_18\"}",
                   "- weights source: torchvision R3D_18_Weights.KINETICS400_V1",
                   "- conversion: torchvision r3d_18 state dict, classifier dropped (fc.bias, fc.weight)",
                   f"- checkpoint: {path} (sha256 {file_hash(path)})", "0 missing, 0 unexpected"):
        assert needle in report, needle
    stdout = capsys.readouterr().out
    assert "expects mean" not in stdout  # the view is normalised as the encoder expects: no note
    # the same run without the normalisation notes it (once per view) and still runs
    cfg = recipe(tmp_path, synth48)
    assert videossl_main(["eval", "knn", "--config", str(cfg), "--encoder", "tv-r3d_18", "--weights", str(path),
                          "--out", str(tmp_path / "knn"), "--no-cache"]) == 0
    stdout = capsys.readouterr().out
    assert "gives [0, 1] frames" in stdout and "expects mean [0.43216" in stdout
    knn = json.loads((tmp_path / "knn" / "results.json").read_text())
    assert knn["weights"]["source"] == f"file {path}" and "classifier dropped" in knn["weights"]["conversion"]


def test_encoder_file_as_weights_builds_its_own_spec_for_every_command(tmp_path, synth48, videossl_main):
    torch.manual_seed(0)
    enc = Small3D(width=4)
    spec = {"class_path": "videossl.models.Small3D", "init_args": {"width": 4}}
    path = tmp_path / "converted.pt"
    save_encoder_file(path, enc.state_dict(), spec, source="test-zoo small3d", conversion="renamed nothing")
    cfg = recipe(tmp_path, synth48)
    for cmd in ("linear", "knn"):
        out = tmp_path / cmd
        assert videossl_main(["eval", cmd, "--config", str(cfg), "--weights", str(path), "--out", str(out)]) == 0
        res = json.loads((out / "results.json").read_text())
        assert res["encoder"] == spec and res["weights"]["conversion"] == "renamed nothing"
        report = (out / "report.md").read_text()
        assert "- weights source: test-zoo small3d (encoder file)" in report
        assert "- conversion: renamed nothing" in report and f"(sha256 {file_hash(path)})" in report
    train_view = {**TINY_VIEW, "sampler": "random", "train": True, "num_clips": 1}
    ft = write_yaml(tmp_path / "ft.yaml", {"data_dir": str(synth48), "batch_size": 8, "epochs": 1, "num_workers": 0,
                                           "train_views": [train_view], "test_views": [TINY_VIEW],
                                           "trainer": {"accelerator": "cpu", "devices": 1}})
    out = tmp_path / "ft"
    assert videossl_main(["eval", "finetune", "--config", str(ft), "--weights", str(path), "--out", str(out),
                          "--no-progress"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["encoder"] == spec and res["weights"]["source"] == "test-zoo small3d (encoder file)"
    assert "- conversion: renamed nothing" in (out / "report.md").read_text()


def test_eval_refuses_views_a_fixed_size_encoder_cannot_run_and_bad_weights(tmp_path, synth48, videossl_main,
                                                                             monkeypatch, capsys):
    cfg = recipe(tmp_path, synth48)
    rc = videossl_main(["eval", "linear", "--config", str(cfg), "--encoder", "tv-mvit_v2_s", "--random-only",
                        "--out", str(tmp_path / "o")])
    line = one_error_line(capsys, rc)
    assert "is 4 frames at 24 px but tv-mvit_v2_s is built for num_frames=16, img_size=224" in line
    # an enum name not in the (empty) hub cache: the file looked for and the URL
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    rc = videossl_main(["eval", "linear", "--config", str(cfg), "--encoder", "tv-swin3d_t", "--weights",
                        "KINETICS400_V1", "--out", str(tmp_path / "o")])
    line = one_error_line(capsys, rc)
    assert str(tmp_path / "empty" / "hub" / "checkpoints" / "swin3d_t-7615ae03.pth") in line
    assert "https://download.pytorch.org/models/swin3d_t-7615ae03.pth" in line
    # a torchvision file of the wrong content: every leftover key named
    sd = tvv.r3d_18().state_dict()
    sd["stray.weight"] = torch.zeros(1)
    del sd["stem.1.running_var"]
    bad = tmp_path / "bad.pth"
    torch.save(sd, bad)
    rc = videossl_main(["eval", "knn", "--config", str(cfg), "--encoder", "tv-r3d_18", "--weights", str(bad),
                        "--out", str(tmp_path / "o")])
    line = one_error_line(capsys, rc)
    assert "1 missing key(s) ['stem.1.running_var']" in line and "1 unexpected key(s) ['stray.weight']" in line
    rc = videossl_main(["eval", "linear", "--config", str(cfg), "--encoder", "no-such-net", "--random-only"])
    assert "neither a registry name" in one_error_line(capsys, rc)
