"""Event order in long captions: the caption grammar, order-shuffled hard negatives, the clause-sequence text
tower (order-sensitive where stage 1's word bag is not), and stage 2 loading stage 1's tower under it."""

import pytest
import torch

from videossl.data.prompts import order_shuffles
from videossl.data.shards.synthetic_long import long_caption, long_caption_events
from videossl.errors import VideosslError
from videossl.methods.long_video import LongVideoContrastive
from videossl.models.text import ClauseSequenceText, HashTextTransformer, split_clauses
from videossl.models.vivit import ViViT

EVENTS = ["a red star moving left", "a blue disc rising", "a green square shrinking", "a pink ring turning clockwise"]


def enc(**kw):
    a = dict(size="tiny", embed_dim=32, depth=2, num_heads=2, img_size=32, num_frames=8, tubelet=(2, 8, 8), mask_ratio=0.75)
    a.update(kw)
    return ViViT(**a)


def bag():
    return HashTextTransformer(embed_dim=32, depth=0, num_heads=2)


def batch(captions):
    b = len(captions)
    return {"views": [torch.randint(0, 255, (b, 8, 3, 32, 32), dtype=torch.uint8)],
            "valid": [torch.ones(b, 8, dtype=torch.bool)], "view_names": ["clip"], "label": torch.arange(b),
            "caption": list(captions)}


def test_long_caption_events_inverts_long_caption():
    for k in (2, 3, 4):
        assert long_caption_events(long_caption(EVENTS[:k])) == EVENTS[:k]
    assert long_caption_events("a red star moving left") is None
    assert long_caption_events("first a red star, then a disc") is None  # no "finally"


def test_order_shuffles_are_the_same_events_in_other_orders():
    cap = long_caption(EVENTS[:3])
    out = order_shuffles(cap, 7, torch.Generator().manual_seed(0))
    assert len(out) == 5 and len(set(out)) == 5 and cap not in out  # 3! - 1 other orders, all found
    for o in out:
        assert sorted(long_caption_events(o)) == sorted(EVENTS[:3])
    again = order_shuffles(cap, 7, torch.Generator().manual_seed(0))
    assert again == out  # the generator decides
    assert len(order_shuffles(long_caption(EVENTS), 3, torch.Generator().manual_seed(0))) == 3
    assert order_shuffles(long_caption([EVENTS[0]] * 3), 2) is None  # every order reads the same
    assert order_shuffles(EVENTS[0], 2) is None
    two = order_shuffles(long_caption([EVENTS[0], EVENTS[0], EVENTS[1]]), 7, torch.Generator().manual_seed(0))
    assert len(two) == 2  # A A B -> A B A, B A A


def test_split_clauses():
    assert split_clauses("first a, then b; finally c") == ["first a", "then b", "finally c"]
    assert split_clauses("one clause") == ["one clause"] and split_clauses(",") == [","]


def test_word_bag_is_nearly_order_blind():
    """Stage 1's depth-0 word tower (word + position vectors, per-word norm, mean): with word vectors of a trained
    size two orders of the same events embed almost alike (what a frozen stage-1 tower gives stage 2)."""
    torch.manual_seed(0)
    base = bag()
    with torch.no_grad():
        base.tok.weight.normal_(0, 1.0)
        a, b, c = base([long_caption(EVENTS[:3]), long_caption(EVENTS[2::-1]), long_caption([EVENTS[0], *EVENTS[2:4]])])
    cos = torch.nn.functional.cosine_similarity
    assert float(cos(a, b, dim=0)) > 0.999 and float(cos(a, c, dim=0)) < 0.99  # other order vs another event


def test_clause_tower_embeds_each_clause_with_its_base():
    torch.manual_seed(0)
    tower = ClauseSequenceText(bag(), max_clauses=3, depth=1, num_heads=2).eval()
    with torch.no_grad():
        one = tower(["a red star moving left", "a red star moving left, then a disc"])
        seen = []
        tower.base.register_forward_hook(lambda mod, args, out: seen.append(list(args[0])))
        tower([long_caption(EVENTS)])  # 4 events: the clauses past max_clauses are dropped
    assert one.shape == (2, 32) and not torch.allclose(one[0], one[1])
    assert seen == [["first " + EVENTS[0], "then " + EVENTS[1], "then " + EVENTS[2]]]


def test_clause_tower_sees_order_from_the_start_and_not_with_order_init_zero():
    """The mean over clauses is order-blind; the order term (late - early clauses, randomly mapped) is not, from
    initialisation on (symmetry breaking), and it is zero for a one-clause text."""
    cos = torch.nn.functional.cosine_similarity
    texts = [", ".join(EVENTS[:3]), ", ".join(EVENTS[2::-1]), EVENTS[0]]
    got = {}
    for init in (0.0, 1.0):
        torch.manual_seed(0)
        base = bag()
        with torch.no_grad():
            base.tok.weight.normal_(0, 1.0)
        tower = ClauseSequenceText(base, depth=0, num_heads=2, order_init=init).eval()
        with torch.no_grad():
            got[init] = tower(texts)
            torch.testing.assert_close(got[init][2], tower.norm(base([EVENTS[0]]) + tower.pos[0, :1])[0])  # mean only
    assert float(cos(got[0.0][0], got[0.0][1], dim=0)) > 0.999  # depth 0, no order term: ~a bag of clauses
    assert float(cos(got[1.0][0], got[1.0][1], dim=0)) < 0.95
    with pytest.raises(VideosslError, match="list of strings"):
        tower("a red star")


def test_stage2_loads_stage1_tower_under_the_clause_head_and_freezes_it_only(tmp_path):
    s1 = LongVideoContrastive(enc(), text_encoder=bag(), embed_dim=16)
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": s1.state_dict()}, path)
    tower = ClauseSequenceText(bag(), depth=1, num_heads=2)
    head0 = {k: v.clone() for k, v in tower.state_dict().items() if not k.startswith("base.")}
    s2 = LongVideoContrastive(enc(num_frames=32, trainable_blocks=1), text_encoder=tower, embed_dim=16,
                              freeze_text=True, hard_negatives="order_shuffle", hard_negative_count=3, init_from=str(path))
    torch.testing.assert_close(s2.text_encoder.base.tok.weight, s1.text_encoder.tok.weight)
    for k, v in head0.items():  # the new head keeps its own initialisation
        torch.testing.assert_close(s2.text_encoder.state_dict()[k], v)
    caps = [long_caption(EVENTS[:3]), long_caption(EVENTS[1:]), EVENTS[0], long_caption([EVENTS[0]] * 2 + [EVENTS[3]])]
    b = batch(caps)
    b["views"] = [torch.randint(0, 255, (4, 32, 3, 32, 32), dtype=torch.uint8)]
    b["valid"] = [torch.ones(4, 32, dtype=torch.bool)]
    loss, _, logs = s2.ssl_step(b)
    assert float(logs["hn_skipped"]) == 1.0 and float(logs["hn_loss"]) > 0  # the one-event caption has no other order
    assert torch.isclose(loss, logs["vt_loss"] + logs["hn_loss"])
    loss.backward()
    got = {n for n, p in s2.named_parameters() if p.grad is not None}
    assert not any(n.startswith("text_encoder.base.") for n in got), sorted(got)
    assert any(n.startswith("text_encoder.blocks.0.") for n in got) and "text_encoder.pos" in got
    assert not any(p.requires_grad for p in s2.text_encoder.base.parameters())


def test_order_negatives_pull_the_caption_away_from_its_shuffles():
    """A few steps of the order term alone on fixed video features: the caption wins against its other orders
    more often than at the start (the loss is of the order, not of which events occur)."""
    torch.manual_seed(0)
    tower = ClauseSequenceText(bag(), depth=1, num_heads=2)
    m = LongVideoContrastive(enc(), text_encoder=tower, embed_dim=16, freeze_text=True, hard_negatives="order_shuffle",
                             hard_negative_count=5)
    caps = [long_caption([EVENTS[i] for i in p]) for p in ((0, 1, 2), (2, 0, 1), (1, 2, 3), (3, 1, 0))]
    v = torch.randn(4, 16)
    t_params = [p for p in m.parameters() if p.requires_grad and p is not m.logit_scale]
    opt = torch.optim.Adam(t_params, lr=1e-2)
    losses = []
    for step in range(60):
        t = m.text_proj(m.text_encoder(caps))
        loss, logs = m._hard_negative_loss(v, t, caps, torch.tensor(0.1), torch.Generator().manual_seed(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])
    assert float(logs["hn_acc"]) == 1.0
