"""The one checkpoint reader: prefixes, key maps, shape checks, one report, weights_only."""

import pytest
import torch
from torch import nn

from videossl.core.checkpoint import LoadReport, load_state, read_file, read_state_dict
from videossl.errors import VideosslError
from videossl.models import Small3D

# --------------------------------------------------------------------------- load_encoder_state

SIDE_EFFECTS = []


def _side_effect(tag):
    SIDE_EFFECTS.append(tag)
    return tag


class Evil:
    def __reduce__(self):
        return (_side_effect, ("unpickled!",))


def _lightning_ckpt(src: nn.Module, prefix="encoder."):
    sd = {prefix + k: v for k, v in src.state_dict().items()}
    sd["head.weight"] = torch.zeros(3)
    return {"state_dict": sd, "epoch": 3, "pytorch-lightning_version": "2.6.6"}


def test_load_lightning_checkpoint_file_strips_prefix(tmp_path):
    torch.manual_seed(0)
    src, dst = Small3D(width=2), Small3D(width=2)
    path = tmp_path / "last.ckpt"
    torch.save(_lightning_ckpt(src), path)
    missing, unexpected = load_state(dst, path, prefix="encoder.")
    assert (missing, unexpected) == ([], [])
    for k, v in src.state_dict().items():
        torch.testing.assert_close(dst.state_dict()[k], v)


def test_load_reports_missing_and_unexpected_keys():
    torch.manual_seed(0)
    src, dst = Small3D(width=2), Small3D(width=2)
    sd = {"encoder." + k: v for k, v in src.state_dict().items() if k != "features.1.bias"}
    sd["encoder.extra.weight"] = torch.ones(2)
    with pytest.warns(UserWarning, match="1 missing key.*features.1.bias.*1 unexpected key.*extra.weight"):
        missing, unexpected = load_state(dst, sd, prefix="encoder.")
    assert missing == ["features.1.bias"] and unexpected == ["extra.weight"]
    torch.testing.assert_close(dst.features[0].weight, src.features[0].weight)


def test_load_refuses_wrong_prefix_and_names_the_found_ones():
    src = Small3D(width=2)
    ckpt = _lightning_ckpt(src, prefix="narrow_backbone.")
    with pytest.raises(VideosslError, match=r"prefixes found: head\., narrow_backbone\."):
        load_state(Small3D(width=2), ckpt, prefix="encoder.")
    # the right prefix works
    assert load_state(Small3D(width=2), ckpt, prefix="narrow_backbone.") == ([], [])


def test_load_key_map_and_shape_mismatch():
    torch.manual_seed(0)
    src = Small3D(width=2)
    sd = {
        "encoder.body." + k.removeprefix("features."): v
        for k, v in src.state_dict().items()
        if k.startswith("features.")
    }
    dst = Small3D(width=2)
    assert load_state(dst, sd, prefix="encoder.", key_map={"body.": "features."}) == ([], [])
    torch.testing.assert_close(dst.features[3].weight, src.features[3].weight)
    # without the map nothing fits the encoder: an error, not a silent no-op
    with pytest.raises(VideosslError, match="matches the model"):
        load_state(Small3D(width=2), sd, prefix="encoder.")
    with pytest.raises(VideosslError, match="do not fit the encoder"):
        load_state(Small3D(width=4), _lightning_ckpt(src), prefix="encoder.")


def test_load_uses_weights_only_and_never_unpickles_objects(tmp_path):
    src = Small3D(width=2)
    ckpt = _lightning_ckpt(src)
    ckpt["hyper_parameters"] = {"thing": Evil()}
    path = tmp_path / "evil.ckpt"
    torch.save(ckpt, path)
    SIDE_EFFECTS.clear()
    with pytest.raises(VideosslError, match="weights_only=True"):
        load_state(Small3D(width=2), path, prefix="encoder.")
    assert SIDE_EFFECTS == []
    with pytest.raises(VideosslError, match="not found"):
        load_state(Small3D(width=2), tmp_path / "nope.ckpt", prefix="encoder.")


def test_disallowed_leftovers_are_one_error_with_the_hint():
    src, dst = Small3D(width=2), Small3D(width=2)
    sd = {k: v for k, v in src.state_dict().items() if k != "features.1.bias"}
    with pytest.raises(VideosslError, match=r"1 missing key.*features\.1\.bias.*check the config"):
        load_state(dst, sd, allow_missing=False, hint="check the config")
    sd = dict(src.state_dict(), **{"extra.weight": torch.ones(1)})
    with pytest.raises(VideosslError, match="1 unexpected key"):
        load_state(Small3D(width=2), sd, allow_unexpected=False)


def test_online_probe_keys_never_count():
    src = Small3D(width=2)
    sd = {**src.state_dict(), "online_probe.1.weight": torch.zeros(3, 4)}
    report = load_state(Small3D(width=2), sd, allow_unexpected=False)
    assert isinstance(report, LoadReport) and report.clean


def test_read_state_dict_keeps_only_tensors_and_read_file_refuses_non_files(tmp_path):
    sd = read_state_dict({"state_dict": {"a": torch.ones(1), "b": 3}, "epoch": 1})
    assert list(sd) == ["a"]
    with pytest.raises(VideosslError, match="not a state dict"):
        read_state_dict([1, 2])
    with pytest.raises(VideosslError, match="not found"):
        read_file(tmp_path / "missing.pt")


def test_encoder_file_round_trip_carries_spec_and_loads_like_encoder_pt(tmp_path):
    from videossl.core.checkpoint import read_encoder_meta, save_encoder_file

    src = nn.Linear(3, 2)
    spec = {"class_path": "torch.nn.Linear", "init_args": {"in_features": 3, "out_features": 2}}
    path = tmp_path / "enc.pt"
    save_encoder_file(path, src.state_dict(), spec, source="test", conversion="identity")
    meta = read_encoder_meta(path)
    assert meta == {"spec": spec, "source": "test", "conversion": "identity"}
    dst = nn.Linear(3, 2)
    assert load_state(dst, path, prefix="encoder.").clean
    assert torch.equal(dst.weight, src.weight)
    plain = tmp_path / "plain.pt"
    torch.save(src.state_dict(), plain)
    assert read_encoder_meta(plain) is None
    with pytest.raises(VideosslError, match="class_path"):
        save_encoder_file(tmp_path / "bad.pt", src.state_dict(), {"init_args": {}})
