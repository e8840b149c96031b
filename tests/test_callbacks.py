"""Run-level callbacks: the data-wait report on a deliberately slow and a fast dataset."""

from __future__ import annotations

import csv
import time

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import DataLoader, Dataset

from videossl.callbacks import DataWaitMonitor


class Batches(Dataset):
    """Ready-made batches (views (B, T, 3, 8, 8) and labels); ``delay`` seconds to produce each."""

    def __init__(self, n: int, delay: float):
        self.n, self.delay = n, delay

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        time.sleep(self.delay)
        return {"views": [torch.zeros(4, 2, 3, 8, 8)], "label": torch.zeros(4, dtype=torch.long)}


class Model(pl.LightningModule):
    """A step that takes ``step_s`` seconds (the compute the data loader must keep up with)."""

    def __init__(self, step_s: float):
        super().__init__()
        self.w, self.step_s = torch.nn.Parameter(torch.zeros(1)), step_s

    def training_step(self, batch, batch_idx):
        time.sleep(self.step_s)
        return (self.w * 0 + batch["views"][0].mean()).sum() + self.w.sum() ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def run(tmp_path, delay: float, step_s: float, capsys) -> tuple[list[float], str]:
    monitor = DataWaitMonitor()
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=CSVLogger(tmp_path, name="", version=""),
                         callbacks=[monitor], enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False)
    trainer.fit(Model(step_s), DataLoader(Batches(6, delay), batch_size=None))
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    clips = [float(r["data/clips_per_s"]) for r in rows if r.get("data/clips_per_s")]
    assert len(clips) == 2 and all(c > 0 for c in clips)
    return [float(r["data/wait_frac"]) for r in rows if r.get("data/wait_frac")], capsys.readouterr().out


def test_a_slow_dataset_shows_a_high_wait_fraction_and_advice(tmp_path, capsys):
    waits, out = run(tmp_path, delay=0.05, step_s=0.002, capsys=capsys)
    assert len(waits) == 2 and min(waits) > 0.7, waits
    assert "data wait:" in out and "the model waits for data: raise data.num_workers" in out


def test_a_fast_dataset_shows_a_low_wait_fraction(tmp_path, capsys):
    waits, out = run(tmp_path, delay=0.0, step_s=0.05, capsys=capsys)
    assert len(waits) == 2 and max(waits) < 0.2, waits
    assert "data wait:" in out and "waits for data" not in out
