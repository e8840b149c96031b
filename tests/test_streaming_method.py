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
