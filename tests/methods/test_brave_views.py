"""BraVe with several broad views (V/AF) and with the audio broad view (V/A), without the data pipeline.

The spec's structure (arXiv:2103.16559; deepmind/brave ``_build_loss_fn``): one backbone and one head pair per broad
modality, terms ``b_<m>_to_n_video`` / ``n_video_to_b_<m>``, the loss their plain mean; the one-broad-view model keeps
the module names of every earlier checkpoint.
"""

from __future__ import annotations

import pytest
import torch

from videossl.errors import VideosslError
from videossl.losses.regression import regression_distance
from videossl.methods.brave import BraVe
from videossl.models import Small3D, SmallAudio2D

HEADS = dict(proj_hidden=32, pred_hidden=32, out_dim=16)


def vaf(**kw) -> BraVe:
    torch.manual_seed(0)
    return BraVe(Small3D(width=8), broad_encoders={"audio": SmallAudio2D(width=8, in_channels=2),
                                                   "flow_est": Small3D(width=8, in_channels=2)}, **HEADS, **kw)


def batch(b: int = 4, has_audio: torch.Tensor | None = None) -> dict:
    """A batch in the pipeline's layout: views (B, T, 3, S, S) by name, the broad window's spectrogram."""
    g = torch.Generator().manual_seed(3)
    out = {"views": [torch.rand(b, 4, 3, 24, 24, generator=g), torch.rand(b, 8, 3, 16, 16, generator=g)],
           "view_names": ["narrow", "broad"], "label": torch.zeros(b, dtype=torch.long),
           "spectrogram": torch.rand(b, 2, 40, 80, generator=g) * 5}
    if has_audio is not None:
        out["has_audio"] = has_audio
    return out


def test_one_backbone_and_one_head_pair_per_broad_modality():
    m = vaf()
    assert m.broad_modalities == ["audio", "flow_est"] and m.broad_encoder is None
    assert set(m.broad_encoders) == set(m.narrow_projectors) == set(m.broad_predictors) == {"audio", "flow_est"}
    keys = set(m.state_dict())
    for mod in ("audio", "flow_est"):
        for part in ("broad_encoders", "narrow_projectors", "narrow_predictors", "broad_projectors", "broad_predictors"):
            assert any(k.startswith(f"{part}.{mod}.") for k in keys), (part, mod)
    # the heads are not shared between modalities (4 head pairs = 8 modules, distinct parameters)
    heads = [m.narrow_projectors, m.narrow_predictors, m.broad_projectors, m.broad_predictors]
    ids = {id(p) for d in heads for h in d.values() for p in h.parameters()}
    assert len(ids) == sum(len(list(h.parameters())) for d in heads for h in d.values())


def test_loss_is_the_plain_mean_of_the_four_named_terms_and_every_backbone_learns():
    m = vaf()
    b = batch()
    loss, feats, logs = m.ssl_step(b)
    names = ["b_audio_to_n_video", "n_video_to_b_audio", "b_flow_est_to_n_video", "n_video_to_b_flow_est"]
    assert all(n in logs for n in names)
    torch.testing.assert_close(loss, torch.stack([logs[n] for n in names]).mean())
    # recompute one term by hand from the modules: the audio broad head predicts the narrow audio-head projection
    with torch.no_grad():
        f_n = m.encoder(b["views"][0].permute(0, 2, 1, 3, 4))
        z_n = m.narrow_projectors["audio"](f_n)
        p_b = m.broad_predictors["audio"](m.broad_projectors["audio"](m.broad_encoders["audio"](b["spectrogram"])))
    torch.testing.assert_close(logs["b_audio_to_n_video"], regression_distance(p_b, z_n))
    loss.backward()
    for name, mod in [("narrow", m.encoder), ("audio", m.broad_encoders["audio"]), ("flow", m.broad_encoders["flow_est"])]:
        g = sum(p.grad.abs().sum().item() for p in mod.parameters() if p.grad is not None)
        assert g > 0, f"the {name} backbone got no gradient"
    assert feats.shape == (4, m.encoder.feature_dim)


def test_samples_without_audio_are_left_out_of_the_audio_terms():
    m = vaf()
    m.eval()  # BN in inference mode: a sample cannot change another's features
    has = torch.tensor([True, True, False, True])
    b1, b2 = batch(has_audio=has), batch(has_audio=has)
    b2["spectrogram"][2] = 0.0  # the silent sample's "sound" changes; the audio terms must not
    _, _, l1 = m.ssl_step(b1)
    _, _, l2 = m.ssl_step(b2)
    torch.testing.assert_close(l1["b_audio_to_n_video"], l2["b_audio_to_n_video"])
    b3 = batch()
    b3["spectrogram"][2] = 0.0
    _, _, l3 = m.ssl_step(b3)  # without has_audio every sample counts: the term moves
    assert not torch.allclose(l1["b_audio_to_n_video"], l3["b_audio_to_n_video"])


def test_one_broad_view_keeps_the_earlier_module_names():
    torch.manual_seed(0)
    m = BraVe(Small3D(width=8), Small3D(width=8), broad_modality="frame_diff", **HEADS)
    tops = list(dict.fromkeys(k.split(".")[0] for k in m.state_dict()))
    assert tops == ["encoder", "broad_encoder", "narrow_projector", "narrow_predictor", "broad_projector",
                    "broad_predictor"]
    assert m.broad_modalities == ["frame_diff"] and m.broad_encoders is None
    loss, _, logs = m.ssl_step(batch())
    torch.testing.assert_close(loss, (logs["b_frame_diff_to_n_video"] + logs["n_video_to_b_frame_diff"]) / 2)


def test_v_a_reads_the_spectrogram_and_says_how_to_get_one():
    torch.manual_seed(0)
    m = BraVe(Small3D(width=8), SmallAudio2D(width=8, in_channels=2), broad_modality="audio", **HEADS)
    loss, _, _ = m.ssl_step(batch())
    assert torch.isfinite(loss)
    b = batch()
    del b["spectrogram"]
    with pytest.raises(VideosslError, match="data.audio"):
        m.ssl_step(b)


@pytest.mark.parametrize("kwargs, message", [
    (dict(), "neither"),
    (dict(broad_encoder=Small3D(width=8), broad_encoders={"rgb": Small3D(width=8)}), "both"),
    (dict(broad_encoders={"rgb": Small3D(width=8)}, broad_modality="rgb"), "broad_modality: null"),
    (dict(broad_encoders={"rgb": Small3D(width=8)}, broad_modalities=["rgb", "audio"]), "once each"),
    (dict(broad_encoders={"sound": Small3D(width=8)}), "unknown broad_modality 'sound'"),
    (dict(broad_encoders={}), "empty"),
    (dict(broad_encoder=Small3D(width=8), broad_modalities=["rgb"]), "broad_modality instead"),
])
def test_bad_broad_arguments_fail_in_one_line(kwargs, message):
    with pytest.raises(VideosslError, match=message):
        BraVe(Small3D(width=8), **kwargs, **HEADS)


def test_broad_modalities_set_the_order():
    m = BraVe(Small3D(width=8), broad_encoders={"audio": SmallAudio2D(width=8, in_channels=2), "rgb": Small3D(width=8)},
              broad_modalities=["rgb", "audio"], **HEADS)
    assert [br.modality for br in m.branches()] == ["rgb", "audio"]


def test_encoder_parts_name_every_backbone():
    assert BraVe.encoder_parts({"broad_modality": "audio"}) == {
        "video": ("narrow_encoder", "encoder."), "audio": ("broad_encoder", "broad_encoder.")}
    assert BraVe.encoder_parts({})["rgb"] == ("broad_encoder", "broad_encoder.")
    parts = BraVe.encoder_parts({"broad_encoders": {"audio": {}, "flow_est": {}}})
    assert parts["audio"] == ("broad_encoders.audio", "broad_encoders.audio.")
    assert parts["flow_est"] == ("broad_encoders.flow_est", "broad_encoders.flow_est.")
    # the prefixes are the model's real state-dict prefixes
    keys = vaf().state_dict()
    assert all(any(k.startswith(prefix) for k in keys) for _, prefix in parts.values())


def test_speed_switches_reach_every_broad_backbone():
    m = vaf(channels_last=True)
    notes = m.apply_speed_switches()
    assert "broad_encoders.audio" in notes["channels_last"] and "broad_encoders.flow_est" in notes["channels_last"]
    w5 = [p for p in m.broad_encoders["flow_est"].parameters() if p.dim() == 5]
    w4 = [p for p in m.broad_encoders["audio"].parameters() if p.dim() == 4]
    assert w5 and all(p.is_contiguous(memory_format=torch.channels_last_3d) for p in w5)
    assert w4 and all(p.is_contiguous(memory_format=torch.channels_last) for p in w4)


def test_audio_diff_is_the_spectrograms_frame_to_frame_change():
    torch.manual_seed(0)
    m = BraVe(Small3D(width=8), SmallAudio2D(width=8, in_channels=2), broad_modality="audio_diff", **HEADS)
    b = batch()
    x = m.broad_input(None, b)
    spec = b["spectrogram"]
    assert x.shape == spec.shape and torch.equal(x[:, :, 0], torch.zeros_like(x[:, :, 0]))
    torch.testing.assert_close(x[:, :, 5], spec[:, :, 5] - spec[:, :, 4])
    b["spectrogram"] = spec[:, :, :1].expand_as(spec).clone()  # a steady sound: nothing changes
    assert torch.count_nonzero(m.broad_input(None, b)) == 0
    has = torch.tensor([True, False, True, True])
    _, _, logs = m.ssl_step({**batch(has_audio=has)})
    assert "b_audio_diff_to_n_video" in logs
