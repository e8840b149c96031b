"""StreamingClassifier: every mode updates the weights through its own rule; config errors are one line."""

from __future__ import annotations

import pytest
import torch

from videossl.errors import VideosslError
from videossl.methods.streaming import StreamingClassifier
from videossl.models.pipelined import FrameCNN


def _model(**kw):
    torch.manual_seed(0)
    return StreamingClassifier(FrameCNN(width=8, depth=4, in_channels=6 if kw.get("frame_input") == "rgb_diff" else 3),
                               num_classes=4, **kw)


@pytest.mark.parametrize("kw", [{"mode": "bp"}, {"mode": "sideways", "cosine_every": 1},
                                {"mode": "sideways", "update": "per_tick"},
                                {"mode": "skip_sideways", "skips": [[0, 2], [1, 3]]},
                                {"mode": "sequential", "frame_input": "rgb_diff"},
                                {"mode": "bp", "clocks": [1, 1, 2, 4]}])
def test_train_clip_updates_weights(kw):
    m = _model(**kw)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    steps = []
    orig = opt.step
    opt.step = lambda: (steps.append(1), orig())[1]
    x = m.clip_inputs({"views": [torch.rand(2, 8, 3, 16, 16)], "view_names": ["stream"]})
    before = [p.detach().clone() for p in m.encoder.stages[0].parameters()]
    loss, acc, logs = m.train_clip(x, torch.tensor([0, 3]), opt)
    assert torch.isfinite(loss) and 0 <= float(acc) <= 1
    assert any(not torch.equal(a, p) for a, p in zip(before, m.encoder.stages[0].parameters(), strict=True))
    assert len(steps) == (8 - 3 if kw.get("update") == "per_tick" else 1)  # per tick: every scored tick (pipe full at 3)
    if kw.get("cosine_every"):
        assert {"cos/stages.0", "cos/stages.3", "cos/extra"} <= set(logs)
    r = m.online_accuracy(x, torch.tensor([0, 3]))
    assert r["per_frame"].shape == (8,)


def test_bad_configs():
    with pytest.raises(VideosslError, match="skips"):
        _model(mode="skip_sideways")
    with pytest.raises(VideosslError, match="per_tick"):
        _model(mode="bp", update="per_tick")
    with pytest.raises(VideosslError, match="mode"):
        _model(mode="nope")


def test_diff_scale_multiplies_the_frame_difference_only():
    clip = torch.rand(2, 3, 5, 8, 8)
    m = _model(mode="sequential", frame_input="rgb_diff", diff_scale=8.0)
    x = m.clip_inputs({"views": [clip.permute(0, 2, 1, 3, 4)], "view_names": ["stream"]})
    assert torch.equal(x[:, :3], clip)
    assert torch.allclose(x[:, 3:, 1:], 8.0 * (clip[:, :, 1:] - clip[:, :, :-1]))
    assert torch.equal(x[:, 3:, 0], torch.zeros_like(x[:, 3:, 0]))


PAIRS = [1, 0, 3, 2]  # classes 0 <-> 1 and 2 <-> 3 are each other played backwards


def test_time_reversal_augmentation_flips_clips_and_maps_labels():
    m = _model(mode="bp", reverse_p=0.5, reversed_class=PAIRS)
    clip = torch.rand(64, 3, 5, 4, 4)
    y = torch.randint(0, 4, (64,))
    out, y2 = m.reverse_in_time(clip, y, torch.Generator().manual_seed(0))
    flipped = torch.tensor([torch.equal(o, c.flip(1)) for o, c in zip(out, clip, strict=True)])
    same = torch.tensor([torch.equal(o, c) for o, c in zip(out, clip, strict=True)])
    assert bool((flipped ^ same).all()) and 16 < int(flipped.sum()) < 48  # each clip either way, about half flipped
    assert torch.equal(y2[flipped], torch.tensor(PAIRS)[y[flipped]]) and torch.equal(y2[same], y[same])
    # the frame input is computed after the reversal: a reversed clip's differences are its own
    m2 = _model(mode="sequential", frame_input="rgb_diff", reverse_p=1.0, reversed_class=PAIRS)
    x, _ = m2.train_inputs({"views": [clip.permute(0, 2, 1, 3, 4)], "view_names": ["stream"], "label": y})
    assert torch.allclose(x[:, 3:, 1], clip[:, :, 3] - clip[:, :, 4])
    assert m.reverse_in_time(clip, y)[0] is not None and _model(mode="bp").reverse_in_time(clip, y)[0] is clip


def test_reversal_config_errors():
    with pytest.raises(VideosslError, match="needs reversed_class"):
        _model(mode="bp", reverse_p=0.5)
    with pytest.raises(VideosslError, match="its own inverse"):
        _model(mode="bp", reverse_p=0.5, reversed_class=[1, 2, 3, 0])
    with pytest.raises(VideosslError, match="reverse_p"):
        _model(mode="bp", reverse_p=1.5, reversed_class=PAIRS)


@pytest.mark.parametrize("kw", [{"mode": "sideways"}, {"mode": "bp"}])
def test_reversal_pair_probe_gives_a_single_frame_model_exactly_one_half(kw):
    # without skips and on RGB frames the top output at tick t depends on one frame only: the probe nulls it
    m = _model(**kw).eval()
    torch.manual_seed(3)
    clip, y = torch.rand(6, 3, 16, 16, 16), torch.tensor([0, 1, 0, 1, 2, 3])
    correct, scored = m.reversal_pair_accuracy(clip, y, (0, 1))
    assert scored == 2 * 4 * 10 and 2 * correct == scored  # 4 clips of the pair x both ways x frames 3 ... 12


def test_reversal_pair_probe_scores_nothing_where_no_frame_has_its_mirror():
    # clocks 1 1 2 4 hold the top output for 4 ticks: newest frames 0, 4, 8 of 16, none mirrored (15, 11, 7)
    m = _model(mode="bp", clocks=[1, 1, 2, 4]).eval()
    assert m.reversal_pair_accuracy(torch.rand(2, 3, 16, 16, 16), torch.tensor([0, 1]), (0, 1)) == (0, 0)


def test_reversal_pair_probe_sees_the_order_of_frames():
    # a delay-0 model that reads the sign of the frame difference (class 0: brightening) tells a clip from its
    # reversal at every mirrored tick: the probe gives it 1, not 1/2
    m = _model(mode="sequential", frame_input="rgb_diff", warmup_ticks=1).eval()

    def online_logits(x):
        d = [x[:, 3:, t].mean((1, 2, 3)) for t in range(x.shape[2])]
        return [torch.stack([v, -v, 0 * v, 0 * v], 1) for v in d], [0] * x.shape[2]

    m.online_logits = online_logits
    clip = torch.rand(3, 3, 8, 4, 4) * 0.1 + torch.linspace(0, 0.8, 8)[None, None, :, None, None]
    correct, scored = m.reversal_pair_accuracy(clip, torch.tensor([0, 0, 3]), (0, 1))
    assert scored == 2 * 2 * 6 and correct == scored  # 2 clips of the pair, both ways, ticks 1 ... 6 (mirrors 6 ... 1)


def _left_and_right(seed: int, n: int = 8, frames: int = 12, size: int = 16, speed: int = 2):
    """n clips of a smooth random texture moving left ``speed`` px/frame (class 0), and the same clips played
    backwards (class 1: moving right)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, size // 4, (size + speed * frames) // 4, generator=g)
    canvas = torch.nn.functional.interpolate(coarse, size=(size, size + speed * frames), mode="bilinear")
    left = torch.stack([canvas[..., speed * t: speed * t + size] for t in range(frames)], dim=2)
    return torch.cat([left, left.flip(2)]), torch.tensor([0] * n + [1] * n)


def test_reversal_grad_cosines_needs_the_reversal_map():
    m = _model(mode="sideways")
    with pytest.raises(VideosslError, match="needs reversed_class"):
        m.reversal_grad_cosines(torch.rand(2, 3, 8, 16, 16), torch.tensor([0, 1]))


def test_reversal_grad_cosines_are_logged_with_the_whole_gradients_cosine():
    m = _model(mode="skip_sideways", skips=[[0, 2], [1, 3]], cosine_every=1, reversed_class=PAIRS)
    x = m.clip_inputs({"views": [torch.rand(2, 8, 3, 16, 16)], "view_names": ["stream"]})
    _, _, logs = m.train_clip(x, torch.tensor([0, 3]), torch.optim.SGD(m.parameters(), lr=0.1))
    rev = {k for k in logs if k.startswith("cos_rev/")}
    assert rev == {f"cos_rev/{k.split('/', 1)[1]}" for k in logs if k.startswith("cos/")} and rev
    assert all(-1 - 1e-6 <= logs[k] <= 1 + 1e-6 for k in rev)


def _stage_means(seed: int, speed: int) -> tuple[float, float]:
    """Skip-Sideways at init: mean over stages 0-2 of the whole gradient's cosine to BP, and of the order
    signal's."""
    from videossl.models.sideways import bp_clip_grads, grad_cosines, sideways_clip_grads

    x, y = _left_and_right(seed, speed=speed)
    if speed == 0:  # a still clip is its own reversal: give class 1 other clips (inverted colours)
        x = torch.cat([x[: len(x) // 2], 1 - x[len(x) // 2:]])
    torch.manual_seed(seed)
    m = StreamingClassifier(FrameCNN(width=8, depth=4), num_classes=2, mode="skip_sideways",
                            skips=[[0, 2], [1, 3]], reversed_class=[1, 0])
    head, n = list(m.head.parameters()), x.shape[2] - m.first_scored_tick()
    whole = grad_cosines(sideways_clip_grads(m.encoder, x, m._loss_fn(y, n, []), head)[0],
                         bp_clip_grads(m.encoder, x, m._loss_fn(y, n, []), head)[0])
    rev = m.reversal_grad_cosines(x, y)
    return (sum(whole[f"stages.{k}"] for k in range(3)) / 3, sum(rev[f"stages.{k}"] for k in range(3)) / 3)


def test_sideways_keeps_the_whole_gradient_but_loses_the_order_signal_on_moving_clips():
    # still clips: Sideways is all but exact (the skips' fill-in ticks), both cosines near 1; moving left / right:
    # the whole gradient stays close to BP's while the part that separates left from right does not (mean over 3
    # random networks)
    still = _stage_means(0, speed=0)
    assert still == pytest.approx((1.0, 1.0), abs=0.01)
    moving = [_stage_means(s, speed=2) for s in range(3)]
    whole, order = (sum(v) / len(v) for v in zip(*moving, strict=True))
    assert whole > 0.85 and order < 0.5, moving


def test_lagged_skip_model_scores_once_its_delay_line_is_full_and_checks_the_concat_widths():
    m = StreamingClassifier(FrameCNN(width=8, depth=4, concat_skips=[0, 0, 0, 1]), num_classes=4,
                            mode="skip_sideways", skips=[[2, 3, 2]], skip_op="concat")
    assert m.first_scored_tick() == 5  # stage 2 first writes at tick 2; two ticks of delay line; then the top
    x = m.clip_inputs({"views": [torch.rand(2, 8, 3, 16, 16)], "view_names": ["stream"]})
    loss, _, _ = m.train_clip(x, torch.tensor([0, 3]), torch.optim.SGD(m.parameters(), lr=0.1))
    assert torch.isfinite(loss)
    logits, _ = m.online_logits(x)
    assert [lg is None for lg in logits] == [True] * 5 + [False] * 3
    with pytest.raises(VideosslError, match="concat_skips"):
        StreamingClassifier(FrameCNN(width=8, depth=4), num_classes=4, mode="skip_sideways", skips=[[2, 3, 2]],
                            skip_op="concat")
