"""`videossl.eval.runs`: the one resolver from a run folder to its method, encoder spec and weights."""

from __future__ import annotations

import pytest
import yaml

from videossl.errors import VideosslError
from videossl.eval.runs import encoder_arg, encoder_spec_from_run, method_class
from videossl.methods.base import SSLMethod
from videossl.methods.brave import BraVe

SMALL = {"class_path": "videossl.models.Small3D", "init_args": {"width": 4}}


def test_the_method_class_names_its_encoder_argument():
    assert SSLMethod.encoder_arg == "encoder" and BraVe.encoder_arg == "narrow_encoder"
    assert method_class({"class_path": "videossl.methods.brave.BraVe"}) is BraVe
    assert encoder_arg({"class_path": "videossl.methods.brave.BraVe"}) == "narrow_encoder"
    assert encoder_arg({"class_path": "videossl.methods.flow_autoencoder.FlowAutoencoder"}) == "encoder"


def test_encoder_spec_from_run(tmp_path):
    cfg = {"model": {"class_path": "videossl.methods.brave.BraVe",
                     "init_args": {"narrow_encoder": SMALL, "broad_encoder": {"class_path": "x.Y"}}}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert encoder_spec_from_run(tmp_path) == SMALL
    cfg["model"]["init_args"] = {"broad_encoder": SMALL}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(VideosslError, match="model.init_args.narrow_encoder"):
        encoder_spec_from_run(tmp_path)
    with pytest.raises(VideosslError, match="no config.yaml"):
        encoder_spec_from_run(tmp_path / "nope")
    with pytest.raises(VideosslError, match="cannot import the model class"):
        method_class({"class_path": "videossl.methods.NoSuchMethod"})
