"""videossl: self-supervised video representation learning on one shared WebDataset pipeline."""

__version__ = "0.1.0"
