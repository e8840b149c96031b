"""`videossl eval long`: segments + pooling vs one long encoder (arXiv:2312.07395 §6.2) — the order-sensitive
zero-shot against hand computations, the segment split, why mean pooling cannot see order, and the command."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
import torch.nn.functional as F
import yaml

from videossl.cli import main
from videossl.errors import VideosslError
from videossl.eval.long_video import (
    AttentionPool,
    LongEvalOptions,
    events_in_view,
    long_features,
    mean_pool,
    order_accuracy,
    order_zeroshot,
    segment_features,
    split_segments,
)
from videossl.models.vivit import ViViT


# ------------------------------------------------------------------------------------ order zero-shot
def test_order_accuracy_by_hand():
    scores = [torch.tensor([0.9, 0.1, 0.2]),  # true caption best: 1
              torch.tensor([0.3, 0.5, 0.1, 0.0]),  # another order best: 0
              torch.tensor([0.7, 0.7, 0.7, 0.1]),  # three-way tie at the top: 1/3
              torch.tensor([0.4, 0.4 - 1e-9])]  # a tie within tolerance: 1/2
    credit, tied = order_accuracy(scores)
    assert credit.tolist() == pytest.approx([1.0, 0.0, 1 / 3, 0.5])
    assert tied.tolist() == [False, False, True, True]
    with pytest.raises(VideosslError, match="at least one other order"):
        order_accuracy([torch.tensor([1.0])])


def _captions(events):
    return "first " + ", then ".join(events[:-1]) + ", finally " + events[-1]


def test_order_zeroshot_all_orders_chance_is_one_over_k_factorial():
    events = ["a red star moving left", "a blue disc growing", "a green square turning"]
    orders = [_captions(list(p)) for p in itertools.permutations(events)]  # 3! = 6 candidates, orders[0] the truth
    vec = {t: F.normalize(torch.randn(16, generator=torch.Generator().manual_seed(i)), dim=0) for i, t in enumerate(orders)}

    def embed_text(texts):
        return torch.stack([vec[t] for t in texts])

    cands = [orders, [orders[1], *orders[:1], *orders[2:]], orders]
    video = torch.stack([vec[orders[0]], vec[orders[0]], vec[orders[3]]])  # right, wrong (caption is orders[1]), wrong
    r = order_zeroshot(embed_text, video, cands)
    assert r["order_zs_chance"] == pytest.approx(1 / 6)  # every order present: 1 / K!
    assert r["order_zs_top1"] == pytest.approx(1 / 3)
    assert r["order_zs_videos"] == 3 and r["order_zs_ties"] == 0.0

    # a text tower blind to word order (a plain bag of words): every candidate ties, exactly chance for any video
    words = {}

    def bag_of_words(texts):
        out = []
        for t in texts:
            ws = [words.setdefault(w, torch.randn(16, generator=torch.Generator().manual_seed(len(words) + 100)))
                  for w in t.replace(",", "").split()]
            out.append(torch.stack(ws).sum(0))
        return torch.stack(out)

    r = order_zeroshot(bag_of_words, torch.randn(3, 16), cands, tol=1e-4)
    assert r["order_zs_top1"] == pytest.approx(1 / 6) and r["order_zs_ties"] == 1.0
    # videos with a single candidate are left out; with none left, nothing is reported
    assert order_zeroshot(embed_text, video[:1], [[orders[0]]]) == {}


# ------------------------------------------------------------------------------------ segments
def test_split_segments_covers_the_clip_exactly():
    t = 21
    clip = torch.arange(t, dtype=torch.float32).view(1, 1, t, 1, 1).expand(2, 3, t, 2, 2).contiguous()
    valid = torch.ones(2, t, dtype=torch.bool)
    valid[1, 15:] = False  # video 1 has 15 real frames (long sampler padding)
    seg = split_segments(clip, valid, 8)
    assert seg.clips.shape == (2 * 3, 3, 8, 2, 2) and seg.present.tolist() == [[True] * 3, [True, True, False]]
    frames = seg.clips[:, 0, :, 0, 0].reshape(2, 24)  # consecutive, in order, every frame once, then the padding
    assert frames[0].tolist() == list(range(21)) + [20.0] * 3
    flat_valid = seg.valid.reshape(2, 24)
    assert flat_valid[0].tolist() == [True] * 21 + [False] * 3  # the padded end of the last segment is marked
    assert frames[1][flat_valid[1]].tolist() == list(range(15))
    strided = split_segments(clip, None, 8, stride=2)
    assert strided.clips[:3, 0, :, 0, 0].tolist() == [[0, 2, 4, 6], [8, 10, 12, 14], [16, 18, 20, 20]]
    assert strided.valid.tolist()[2] == [True, True, True, False]
    with pytest.raises(VideosslError, match="multiple of the stride"):
        split_segments(clip, None, 8, stride=3)


@pytest.fixture(scope="module")
def vivit():
    torch.manual_seed(0)
    model = ViViT(embed_dim=32, depth=2, num_heads=2, img_size=16, num_frames=8, tubelet=(2, 8, 8)).eval()
    with torch.no_grad():
        model.pos_temporal.normal_()  # a temporal table of a trained model's scale (init: std 0.02)
    return model


def _permute_segments(clip, order, frames):
    return torch.cat([clip[:, :, i * frames:(i + 1) * frames] for i in order], 2)


def test_mean_pool_of_segments_is_invariant_to_segment_order_the_long_encoder_is_not(vivit):
    """Why segment mean pooling sits at chance on order-only tasks: the same segments in another order give the
    same vector. The long encoder (one pass over all frames, temporal positions over the whole video) tells them apart."""
    clip = torch.rand(2, 3, 32, 16, 16, generator=torch.Generator().manual_seed(1))
    shuffled = _permute_segments(clip, [2, 0, 3, 1], 8)
    with torch.no_grad():
        a = mean_pool(*segment_features(vivit, clip, None, 8))
        b = mean_pool(*segment_features(vivit, shuffled, None, 8))
        la, _ = long_features(vivit, clip, None)
        lb, _ = long_features(vivit, shuffled, None)
    assert torch.allclose(a, b, atol=1e-5)
    assert (la - lb).abs().max() > 1e-2  # vs 1e-5 above


def test_attention_pool_starts_as_the_mean_pool_and_positions_make_it_order_aware():
    feats = torch.randn(3, 5, 8)
    present = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    torch.manual_seed(0)
    pool = AttentionPool(8, 5, heads=2)
    assert torch.allclose(pool(feats, present), mean_pool(feats, present), atol=1e-6)
    with torch.no_grad():  # as after training: non-zero queries and values
        for p in (pool.query, pool.value.weight, pool.pos):
            p.normal_()
    order = [1, 0, 4, 3, 2]  # the same segments (and their presence) in another order
    perm, perm_present = feats[:, order], present[:, order]
    assert (pool(feats, present) - pool(perm, perm_present)).abs().max() > 1e-3
    nopos = AttentionPool(8, 5, heads=2, positions=False)
    with torch.no_grad():
        nopos.query.normal_()
        nopos.value.weight.normal_()
    assert torch.allclose(nopos(feats, present), nopos(perm, perm_present), atol=1e-5)


def test_events_in_view():
    metas = [{"events": [{"end": 16}, {"end": 120}]}, {"events": [{"end": 16}, {"end": 140}]}, {"events": [{"end": 200}]}]
    assert events_in_view(metas, 128, 1.0) == {"last_event_in_view": pytest.approx(1 / 3),
                                               "all_events_in_view": pytest.approx(1 / 3)}
    assert events_in_view(metas, 100, 2.0)["last_event_in_view"] == pytest.approx(2 / 3)  # frames 0, 2, ..., 198


def test_options_are_checked():
    with pytest.raises(VideosslError, match="--pool applies to --aggregate segments"):
        LongEvalOptions(aggregate="long", pool="attention")
    with pytest.raises(VideosslError, match="unknown aggregate"):
        LongEvalOptions(aggregate="chunks")
    assert LongEvalOptions(frames=128, aggregate="segments", segment_frames=16).num_segments == 8
    assert LongEvalOptions(frames=130, aggregate="segments", segment_frames=16).num_segments == 9


# ------------------------------------------------------------------------------------ the command
TINY_MODEL = {
    "class_path": "videossl.methods.long_video.LongVideoContrastive",
    "init_args": {
        "encoder": {"class_path": "videossl.models.vivit.ViViT",
                    "init_args": {"embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": 32, "num_frames": 8,
                                  "tubelet": [2, 8, 8], "mask_ratio": 0.75}},
        "text_encoder": {"class_path": "videossl.models.text.HashTextTransformer",
                         "init_args": {"embed_dim": 32, "depth": 0, "num_heads": 2}},
        "embed_dim": 32, "proj_hidden": 32,
    },
}


@pytest.fixture(scope="module")
def long_run(tmp_path_factory):
    """A tiny long synthetic set (24 videos: 8 train / 8 test) and a randomly initialised video-text run on it."""
    from videossl.data.shards.synthetic_long import generate_long
    from videossl.eval.runs import build_method

    root = tmp_path_factory.mktemp("long")
    generate_long(root / "data", 24, seed=1, size=32, num_frames=8, progress=False)
    cfg = {"model": TINY_MODEL, "data": {"init_args": {"data_dir": str(root / "data")}}}
    run = root / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    torch.manual_seed(0)
    torch.save({"state_dict": build_method(cfg).state_dict()}, run / "checkpoints" / "last.ckpt")
    return run, root / "data"


def test_eval_long_segments_and_long_then_compare(long_run, tmp_path, capsys):
    run, data = long_run
    common = ["--run", str(run), "--frames", "32", "--batch-size", "4", "--device", "cpu"]
    assert main(["eval", "long", *common, "--aggregate", "segments", "--segment-frames", "8", "--pool", "attention",
                 "--pool-epochs", "2", "--out", str(tmp_path / "seg")]) == 0
    assert main(["eval", "long", *common, "--aggregate", "long", "--out", str(tmp_path / "long")]) == 0
    seg = json.loads((tmp_path / "seg" / "results.json").read_text())
    lng = json.loads((tmp_path / "long" / "results.json").read_text())
    assert seg["kind"] == "long" and seg["results"][0]["name"] == "segments8-attention"
    r = seg["results"][0]
    assert r["segments_per_video"] == 4.0 and r["pool_info"]["steps"] == 2 and r["pool_info"]["parameters"] > 0
    assert lng["results"][0]["segments_per_video"] == 1.0 and lng["results"][0]["name"] == "long"

    # chance of the order zero-shot by hand, from the test samples' JSON
    from videossl.data.shards.format import iter_tar_samples, split_shard_paths

    metas = [json.loads(m["json"]) for p in split_shard_paths(data, "test") for _, m in iter_tar_samples(p)]
    chance = sum(1 / (1 + len(m["shuffled_captions"])) for m in metas) / len(metas)
    for res in (r, lng["results"][0]):
        assert res["order_zs_chance"] == pytest.approx(chance) and res["order_zs_videos"] == len(metas) == 8
        assert 0.0 <= res["order_zs_top1"] <= 1.0 and res["num_test_videos"] == 8 and res["num_train_videos"] == 8
        assert res["chance_r1"] == pytest.approx(1 / 8) and res["probe_chance"] == pytest.approx(1 / 64)
        assert {"t2v_r1", "t2v_r5", "t2v_r10", "v2t_r1", "top1", "top5"} <= set(res)
    report = (tmp_path / "seg" / "report.md").read_text()
    assert "## Protocol" in report and "masking: off" in report and seg["checkpoint_sha256"] in report
    assert "learned segment-position embeddings" in report and "4 consecutive segments of 8 frames" in report
    assert "| order-sensitive zero-shot top-1 |" in report and "chance %" in report

    capsys.readouterr()
    assert main(["eval", "long", "--compare", str(tmp_path / "seg"), str(tmp_path / "long" / "results.json"),
                 "--out", str(tmp_path / "cmp.md")]) == 0
    md = (tmp_path / "cmp.md").read_text()
    assert "segments8-attention" in md and "| long |" in md.replace(str(tmp_path / "long"), "")
    # the generic comparison reads the probe's top-1 as well
    assert main(["eval", "compare", str(tmp_path / "seg"), "--out", str(tmp_path / "cmp2.md")]) == 0
    assert "segments8-attention" in (tmp_path / "cmp2.md").read_text()


def test_eval_long_refuses_a_short_set_and_a_missing_run(long_run, tmp_path, capsys):
    from videossl.data.shards.synthetic import generate

    run, _ = long_run
    short = tmp_path / "short"
    generate(short, 16, seed=1, size=32, num_frames=8, progress=False)
    assert main(["eval", "long", "--run", str(run), "--data-dir", str(short), "--frames", "8", "--batch-size", "2",
                 "--device", "cpu", "--out", str(tmp_path / "o"), "--no-cache"]) == 2
    assert "not a long synthetic set" in capsys.readouterr().err
    assert main(["eval", "long", "--aggregate", "long"]) == 2
    assert "give --run RUN" in capsys.readouterr().err


def test_mean_pool_weights_present_segments_only():
    feats = torch.tensor([[[1.0, 0.0], [3.0, 2.0], [100.0, 100.0]]])
    assert mean_pool(feats, torch.tensor([[True, True, False]])).tolist() == [[2.0, 1.0]]
