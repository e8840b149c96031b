"""Retrieval / zero-shot metrics against hand computations."""

import pytest
import torch

from videossl.data.prompts import class_phrase, class_prompts, dataset_kind
from videossl.errors import VideosslError
from videossl.eval.retrieval import class_embeddings, recall_at_k, retrieval_metrics, zeroshot_accuracy


def test_recall_at_k_by_hand():
    sim = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.3, 0.8], [0.7, 0.6, 0.1]])
    ids = torch.tensor([0, 1, 2])
    # query 0: rank 1 hit; query 1: best positive (col 1) is 2nd; query 2: col 2 is last (3rd)
    r = recall_at_k(sim, ids, ids, ks=(1, 2, 3))
    assert r == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3), 3: pytest.approx(1.0)}


def test_shared_captions_count_every_video():
    sim = torch.tensor([[0.1, 0.9, 0.2]])  # one text, its caption shared by videos 0 and 1
    r = recall_at_k(sim, torch.tensor([7]), torch.tensor([7, 7, 3]), ks=(1,))
    assert r[1] == 1.0
    with pytest.raises(VideosslError):
        recall_at_k(sim, torch.tensor([5]), torch.tensor([7, 7, 3]))


def test_retrieval_metrics_both_directions():
    sim = torch.eye(4)
    m = retrieval_metrics(sim, torch.arange(4), torch.arange(4))
    assert m["t2v_r1"] == m["v2t_r1"] == 1.0 and m["t2v_medr"] == 1.0
    m = retrieval_metrics(-torch.eye(4), torch.arange(4), torch.arange(4))
    assert m["t2v_r1"] == 0.0 and m["t2v_medr"] == 4.0


def test_zeroshot_accuracy_by_hand():
    cls = torch.eye(3)
    vid = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [1.0, 0.5, 0], [0, 0, 1.0]])
    labels = torch.tensor([0, 1, 1, 2])
    r = zeroshot_accuracy(vid, cls, labels)
    assert r["top1"] == 0.75 and r["top5"] == 1.0
    assert r["mean_class"] == pytest.approx((1 + 0.5 + 1) / 3)


def test_prompts_and_class_embeddings():
    assert class_phrase("ApplyEyeMakeup") == "apply eye makeup"
    assert class_phrase("brush_hair") == "brush hair"
    assert class_phrase("playing guitar") == "playing guitar"
    assert dataset_kind(["translate_left", "zoom_in"]) == "synthetic"
    assert any("sliding to the left" in p for p in class_prompts("translate_left", "synthetic"))
    emb = class_embeddings(lambda txt: torch.randn(len(txt), 8), ["a", "b"], "generic")
    assert emb.shape == (2, 8) and torch.allclose(emb.norm(dim=1), torch.ones(2))


def test_caption_zeroshot_holds_appearance_fixed():
    from videossl.data.prompts import _find_motion_phrase, with_motion
    from videossl.data.shards.synthetic import CLASSES
    from videossl.eval.retrieval import caption_zeroshot

    cap = "a red star moving left over a striped background"
    assert with_motion(cap, "rotate_cw") == [
        "a red star rotating clockwise over a striped background",
        "a red star spinning clockwise over a striped background",
        "a red star turning clockwise over a striped background",
    ]
    assert with_motion("a person playing guitar", "zoom_in") is None

    def embed_text(texts):  # one-hot of the motion class each caption names
        return torch.stack([torch.nn.functional.one_hot(torch.tensor(CLASSES.index(_find_motion_phrase(t)[0])), 8).float()
                            for t in texts])

    caps = [cap, "a blue square rising over a plain grey background", "no motion here"]
    labels = torch.tensor([0, 2, 5])
    # video 0 looks like class 0 (right), video 1 like class 3 (wrong), video 2 has no motion phrase: skipped
    emb = torch.nn.functional.one_hot(torch.tensor([0, 3, 5]), 8).float()
    out = caption_zeroshot(embed_text, emb, caps, labels, list(CLASSES))
    assert out == {"zs_caption_top1": 0.5, "zs_caption_videos": 2}
