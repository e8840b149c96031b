"""`videossl eval linear | knn | finetune | compare` end to end on a tiny synthetic set, the user
errors of the eval commands (one line, exit code 2), and DDP feature extraction with 2 processes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

try:
    from .conftest import TINY_VIEW, one_error_line, write_yaml
except ImportError:  # tests/eval is not a package
    from conftest import TINY_VIEW, one_error_line, write_yaml


def linear_recipe(tmp: Path, data: Path, **over) -> Path:
    d = {"data_dir": str(data), "views": [TINY_VIEW], "batch_size": 8, "num_workers": 0,
         "probe": {"kind": "softmax", "optimizer": "lbfgs", "epochs": 30, "weight_decay": 1e-2, "tau": 0.5,
                   "confidence_holdout": 0.25},
         "knn": {"k": [20, 5], "retrieval_ks": [1, 5]}, "pretrain": "BraVe, 2 steps on the tiny set"}
    d.update(over)
    return write_yaml(tmp / "eval.yaml", d)


def test_linear_knn_compare_end_to_end(tmp_path, synth48, brave_run, videossl_main, capsys):
    cfg = linear_recipe(tmp_path, synth48)
    out = tmp_path / "linear"
    assert videossl_main(["eval", "linear", "--config", str(cfg), "--run", str(brave_run), "--compare-random",
                          "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in res["results"]] == ["pretrained", "random-init"]
    assert res["kind"] == "linear" and res["checkpoint_sha256"]
    for r in res["results"]:
        assert r["num_test_videos"] == 8 and r["num_train_videos"] == 32 and r["views_per_video"] == 2
        assert 0 <= r["top1"] <= 1 and set(r["confidence"]) >= {"msp", "margin"}
        assert [a["tau"] for a in r["abstention"]["msp"]] == [0.1, 0.3, 0.5, 0.7, 0.9]
        if "learned" in r["confidence"]:  # needs right and wrong held-out predictions
            assert 0 <= r["confidence"]["learned"]["aurc"] <= 1
        for kind in ("per_class", "reliability", "risk_coverage"):
            png = out / f"{r['name']}-{kind}.png"
            assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
    report = (out / "report.md").read_text()
    for needle in ("## Protocol", "backbone: videossl.models.Small3D", "test views per video: 2", "probe: softmax",
                   "checkpoint:", "## Selective prediction", "| pretrained | msp |", "Instructed abstention"):
        assert needle in report

    out_knn = tmp_path / "knn"
    assert videossl_main(["eval", "knn", "--config", str(cfg), "--run", str(brave_run), "--compare-random",
                          "--out", str(out_knn)]) == 0
    knn = json.loads((out_knn / "results.json").read_text())
    assert knn["kind"] == "knn" and set(knn["results"][0]["knn"]) == {"20", "5"}
    assert set(knn["results"][0]["retrieval"]) == {"R@1", "R@5"}
    assert "T=0.07" in (out_knn / "report.md").read_text()

    md = tmp_path / "cmp.md"
    assert videossl_main(["eval", "compare", str(out / "results.json"), str(out_knn), "--out", str(md)]) == 0
    table = md.read_text()
    assert table.count("| linear |") == 2 and table.count("| knn |") == 2
    assert "pretrained" in table and "random-init" in table


def test_finetune_from_lightning_checkpoint(tmp_path, synth48, brave_run, videossl_main):
    cfg = write_yaml(tmp_path / "ft.yaml", {
        "data_dir": str(synth48), "batch_size": 8, "epochs": 1,
        "train_views": [{"name": "clip", "sampler": "random", "frames": 4, "stride": 1, "size": 24,
                         "augment": {"flip_p": 0.0, "blur_p": 0.0}}],
        "test_views": [TINY_VIEW],
        "optim": {"name": "adamw", "lr": 1e-3, "ref_batch_size": None, "weight_decay": 0.05, "warmup": 0.1},
        "layer_decay": 0.75, "label_smoothing": 0.1, "tau": 0.5,
        "mixup": {"mixup_alpha": 0.8, "cutmix_alpha": 1.0},
        "trainer": {"limit_train_batches": 2},
    })
    out = tmp_path / "ft"
    spec = json.dumps({"class_path": "videossl.models.Small3D", "init_args": {"width": 4}})
    assert videossl_main(["eval", "finetune", "--config", str(cfg), "--ckpt", str(brave_run / "checkpoints/last.ckpt"),
                          "--encoder", spec, "--out", str(out), "--no-progress"]) == 0
    res = json.loads((out / "results.json").read_text())
    r = res["results"][0]
    assert res["kind"] == "finetune" and r["steps"] == 2 and r["num_test_videos"] == 8 and r["views_per_video"] == 2
    for kind in ("per_class", "reliability", "risk_coverage"):
        assert (out / f"pretrained-{kind}.png").is_file()
    sd = torch.load(out / "pretrained-finetuned.pt", weights_only=True)
    assert any(k.startswith("encoder.") for k in sd) and "head.1.weight" in sd
    assert "layer-wise lr decay: 0.75" in (out / "report.md").read_text()


# ----------------------------------------------------------------------------------------- errors
def test_checkpoint_with_mismatched_keys(tmp_path, synth48, brave_run, videossl_main, capsys):
    cfg = linear_recipe(tmp_path, synth48)
    wider = json.dumps({"class_path": "videossl.models.Small3D", "init_args": {"width": 8}})
    rc = videossl_main(["eval", "linear", "--config", str(cfg), "--run", str(brave_run), "--encoder", wider,
                        "--out", str(tmp_path / "o")])
    assert "do not fit the encoder" in one_error_line(capsys, rc)
    sd = torch.load(brave_run / "encoder.pt", weights_only=True)
    partial = tmp_path / "partial.pt"
    torch.save({k: v for k, v in sd.items() if "features.0" not in k}, partial)
    ft = write_yaml(tmp_path / "ft.yaml", {"data_dir": str(synth48), "test_views": [TINY_VIEW]})
    for cmd, c in (("linear", cfg), ("finetune", ft)):
        rc = videossl_main(["eval", cmd, "--config", str(c), "--run", str(brave_run), "--ckpt", str(partial),
                            "--out", str(tmp_path / "o")])
        assert "missing key(s)" in one_error_line(capsys, rc)
    rc = videossl_main(["eval", "knn", "--config", str(cfg), "--run", str(brave_run), "--ckpt", str(partial),
                        "--prefix", "backbone.", "--out", str(tmp_path / "o")])
    assert "no key" in one_error_line(capsys, rc)


@pytest.fixture(scope="module")
def csv_sets(tmp_path_factory):
    """Two shard sets from a CSV layout: class 'c' only in test (unseen); a test split of broken files (empty)."""
    from videossl.data.shards.make import make_shards

    try:
        from tests.data._videos import make_video
    except ImportError:
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
        from _videos import make_video
    base = tmp_path_factory.mktemp("csvsets")
    rows = []
    for i, (cls, split) in enumerate([("a", "train"), ("a", "train"), ("b", "train"), ("b", "train"),
                                      ("a", "test"), ("c", "test")]):
        make_video(base / "v" / f"{cls}{i}.mp4", num_frames=6, width=32, height=24, seed=i)
        rows.append(f"v/{cls}{i}.mp4,{cls},{split}")
    (base / "unseen.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
    make_shards("csv", base, base / "unseen", annotations=base / "unseen.csv", progress=False)
    (base / "v" / "broken.mp4").write_bytes(b"not a video")
    (base / "empty.csv").write_text("path,label,split\n" + "\n".join(rows[:4]) + "\nv/broken.mp4,a,test\n")
    make_shards("csv", base, base / "empty", annotations=base / "empty.csv", progress=False)
    return base


@pytest.mark.parametrize("cmd", ["linear", "knn", "finetune"])
def test_unseen_test_class_is_one_error(tmp_path, csv_sets, videossl_main, capsys, cmd):
    view = {**TINY_VIEW, "num_clips": 1}
    if cmd == "finetune":
        train_view = {**view, "sampler": "random", "train": True}
        cfg = write_yaml(tmp_path / "c.yaml", {"data_dir": str(csv_sets / "unseen"), "batch_size": 2, "epochs": 1,
                                               "test_views": [view], "train_views": [train_view]})
        args = ["--random-init"]
    else:
        cfg = linear_recipe(tmp_path, csv_sets / "unseen", views=[view], batch_size=2)
        args = ["--random-only"]
    spec = json.dumps({"class_path": "videossl.models.Small3D", "init_args": {"width": 2}})
    rc = videossl_main(["eval", cmd, "--config", str(cfg), "--encoder", spec, *args, "--out", str(tmp_path / "o"),
                        *(["--no-cache"] if cmd != "finetune" else ["--no-progress"])])
    line = one_error_line(capsys, rc)
    assert "never occur in the train split" in line and "'c'" in line


def test_empty_split_is_one_error(tmp_path, csv_sets, videossl_main, capsys):
    spec = json.dumps({"class_path": "videossl.models.Small3D", "init_args": {"width": 2}})
    cfg = linear_recipe(tmp_path, csv_sets / "empty", views=[{**TINY_VIEW, "num_clips": 1}], batch_size=2)
    rc = videossl_main(["eval", "linear", "--config", str(cfg), "--encoder", spec, "--random-only",
                        "--out", str(tmp_path / "o"), "--no-cache"])
    line = one_error_line(capsys, rc)
    assert "'test'" in line and ("no samples" in line or "not in" in line)


@pytest.mark.parametrize("cmd", ["linear", "knn"])
def test_data_dir_flag_overrides_the_recipe(tmp_path, csv_sets, videossl_main, capsys, cmd):
    # the recipe names the empty set; --data-dir points at the set with an unseen test class, whose error proves
    # the override took effect
    spec = json.dumps({"class_path": "videossl.models.Small3D", "init_args": {"width": 2}})
    cfg = linear_recipe(tmp_path, csv_sets / "empty", views=[{**TINY_VIEW, "num_clips": 1}], batch_size=2)
    rc = videossl_main(["eval", cmd, "--config", str(cfg), "--data-dir", str(csv_sets / "unseen"), "--encoder", spec,
                        "--random-only", "--out", str(tmp_path / "o"), "--no-cache"])
    assert "never occur in the train split" in one_error_line(capsys, rc)


def test_splits_flag_needs_template(tmp_path, synth48, brave_run, videossl_main, capsys):
    cfg = linear_recipe(tmp_path, synth48)
    rc = videossl_main(["eval", "linear", "--config", str(cfg), "--run", str(brave_run), "--splits", "1,2,3"])
    assert "{split}" in one_error_line(capsys, rc)


# ------------------------------------------------------------------------------------ DDP extraction
def _ddp_worker(rank: int, world: int, port: int, data: str, out: str) -> None:
    import torch.distributed as dist

    from videossl.data.loader import ViewSpec
    from videossl.eval.features import extract_features

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        from videossl.models import Small3D

        enc = Small3D(width=2)
        fs = extract_features(enc, data, "test", [ViewSpec(**TINY_VIEW)], batch_size=3, progress=False,
                              cache_dir=Path(out) / "cache")
        torch.save({"feats": fs.feats, "ids": fs.video_ids, "labels": fs.labels}, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_extraction_two_processes(tmp_path, synth48):
    import socket

    import torch.multiprocessing as mp

    import videossl.methods.base  # noqa: F401  (imported before the fork: the workers inherit it)
    from videossl.data.loader import ViewSpec
    from videossl.eval.features import extract_features
    from videossl.models import Small3D

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # 8 test videos over 2 ranks in batches of 3: each rank reads 4 and pads 2 duplicates
    # forked (not re-imported) workers keep the test fast; the collective code path is the same
    mp.start_processes(_ddp_worker, args=(2, port, str(synth48), str(tmp_path)), nprocs=2, join=True,
                       start_method="fork")
    torch.manual_seed(0)
    single = extract_features(Small3D(width=2), str(synth48), "test", [ViewSpec(**TINY_VIEW)], batch_size=8,
                              progress=False)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["ids"] == r1["ids"] == single.video_ids  # every video once, in the split's order, on every rank
    assert len(set(r0["ids"])) == 8 and len(r0["ids"]) == 16
    torch.testing.assert_close(r0["feats"], single.feats, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(r1["feats"], r0["feats"])
    assert torch.equal(r0["labels"], single.labels)
    assert len(list((tmp_path / "cache").glob("feats-test-*.pt"))) == 1  # written once, by rank 0
