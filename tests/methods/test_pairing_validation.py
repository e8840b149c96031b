"""The held-out pairing check during `fit` (``data.val_pairs``): SSL loss with true and with shuffled pairs.

Session 9 found BraVe V/A memorising its training pairs (held-out pairs agree no better than shuffled ones); this
check reports that gap at every validation instead of after the run.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from tests.methods._fit import REPO, run_videossl, tiny_synth
from tests.methods.test_brave_training import TINY
from videossl.methods.base import SSLMethod
from videossl.methods.brave import BraVe
from videossl.models import Small3D, SmallAudio2D


class _Agree(SSLMethod):
    """A stand-in two-view method: its loss is the mean squared difference of the narrow and the broad clip."""

    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Identity()
        self.logged: dict[str, float] = {}

    def ssl_step(self, batch):
        narrow, broad = batch["views"]
        return ((narrow - broad) ** 2).mean(), narrow.flatten(1), {}

    def shuffle_pairs(self, batch, perm):
        return {**batch, "views": [batch["views"][0], batch["views"][1][perm]]}

    def log(self, name, value, **kw):  # no trainer here: keep what would be logged
        assert kw.get("add_dataloader_idx") is False  # the names stay val/..., not val/.../dataloader_idx_1
        self.logged[name] = float(value)


def _pairs(x: torch.Tensor) -> dict:
    return {"views": [x, x.clone()], "view_names": ["narrow", "broad"], "label": torch.zeros(len(x), dtype=torch.long)}


def test_gap_is_positive_when_pairs_agree_and_zero_when_samples_are_alike():
    m = _Agree()
    m.validation_step(_pairs(torch.rand(6, 2, 3, 4, 4, generator=torch.Generator().manual_seed(0))), 0, dataloader_idx=1)
    assert m.logged["val/ssl_loss"] == 0.0
    assert m.logged["val/ssl_loss_shuffled"] > 0.01  # every sample meets another's broad side (a derangement)
    assert m.logged["val/pair_gap"] == pytest.approx(m.logged["val/ssl_loss_shuffled"])
    m.validation_step(_pairs(torch.ones(6, 2, 3, 4, 4)), 0, dataloader_idx=1)  # all samples alike: nothing to tell apart
    assert m.logged["val/pair_gap"] == 0.0


def test_a_method_without_pairs_logs_only_the_loss():
    m = _Agree()
    m.shuffle_pairs = lambda batch, perm: None  # the base's default
    m.validation_step(_pairs(torch.rand(4, 2, 3, 4, 4)), 0, dataloader_idx=1)
    assert set(m.logged) == {"val/ssl_loss"}


def test_brave_shuffles_the_broad_side_only():
    torch.manual_seed(0)
    m = BraVe(Small3D(width=8), broad_encoder=SmallAudio2D(width=8, in_channels=2), broad_modality="audio",
              proj_hidden=32, pred_hidden=32, out_dim=16)
    g = torch.Generator().manual_seed(1)
    b = {"views": [torch.rand(4, 4, 3, 24, 24, generator=g), torch.rand(4, 8, 3, 16, 16, generator=g)],
         "view_names": ["narrow", "broad"], "label": torch.arange(4), "spectrogram": torch.rand(4, 2, 40, 80, generator=g),
         "has_audio": torch.tensor([True, False, True, True]), "valid": [None, torch.rand(4, 8, generator=g) > 0.5]}
    perm = torch.tensor([3, 0, 1, 2])
    before = b["views"][1].clone()
    s = m.shuffle_pairs(b, perm)
    assert s["views"][0] is b["views"][0] and torch.equal(s["label"], b["label"])  # narrow side and labels untouched
    assert torch.equal(s["views"][1], b["views"][1][perm])
    assert torch.equal(s["spectrogram"], b["spectrogram"][perm]) and torch.equal(s["has_audio"], b["has_audio"][perm])
    assert s["valid"][0] is None and torch.equal(s["valid"][1], b["valid"][1][perm])
    assert torch.equal(b["views"][1], before)  # the input batch is not modified in place


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return tiny_synth(tmp_path_factory)


def test_fit_logs_the_pairing_figures_per_validation_and_a_verdict(tmp_path, synth):
    run = tmp_path / "run"
    r = run_videossl("fit", "--config", str(REPO / "recipes/brave/synthetic.yaml"), "--data.data_dir", str(synth),
                     "--trainer.default_root_dir", str(run), *TINY, "--data.val_pairs", "true",
                     "--trainer.max_epochs", "2", "--trainer.check_val_every_n_epoch", "1")
    rows = list(csv.DictReader(open(Path(run) / "metrics.csv")))
    gaps = [float(x["val/pair_gap"]) for x in rows if x.get("val/pair_gap")]
    true = [float(x["val/ssl_loss"]) for x in rows if x.get("val/ssl_loss")]
    shuffled = [float(x["val/ssl_loss_shuffled"]) for x in rows if x.get("val/ssl_loss_shuffled")]
    assert len(gaps) == len(true) == len(shuffled) == 2  # one per validation
    assert all(abs(g - (s - t)) < 1e-4 for g, s, t in zip(gaps, shuffled, true, strict=True)), (gaps, shuffled, true)
    assert any(x.get("val/probe_acc") for x in rows)  # the probe's loader still runs beside the pairs loader
    out = r.stdout + r.stderr
    assert "pairing check (val split, last validation): SSL loss true pairs" in out


def test_a_method_with_its_own_validation_step_refuses_val_pairs():
    from types import SimpleNamespace

    from videossl.errors import VideosslError

    class OwnValidation(_Agree):
        def validation_step(self, batch, batch_idx):
            return None

    fake = SimpleNamespace(datamodule=SimpleNamespace(val_pairs=True))
    ok, own = _Agree(), OwnValidation()
    ok._trainer = own._trainer = fake
    ok.setup("fit")  # SSLMethod's validation_step reads both loaders
    with pytest.raises(VideosslError, match="OwnValidation has its own validation_step"):
        own.setup("fit")
    fake.datamodule.val_pairs = False
    own.setup("fit")  # without val_pairs nothing to refuse
