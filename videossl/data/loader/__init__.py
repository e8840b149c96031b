"""The read side: shards → decoded, sampled, augmented views → batches, for every method and evaluation.

``decoding`` (one decoder interface) → ``sampling`` (clip samplers, a name → function table) →
``transforms`` (video-consistent augmentation) → ``views`` (what each view is) → ``dataset`` (the
WebDataset reader: ``shardset``, ``partition``, ``skips``, ``batch``) → ``datamodule`` (Lightning).
"""

from videossl.data.loader.batch import collate, to_clip, view, view_indices, view_valid
from videossl.data.loader.datamodule import VideoDataModule, default_eval_views, default_train_views
from videossl.data.loader.dataset import EpochDataLoader, VideoShardDataset, make_loader
from videossl.data.loader.resources import check_ram, ram_estimate
from videossl.data.loader.shardset import ShardSource, resolve_shards
from videossl.data.loader.skips import SkipLog
from videossl.data.loader.transforms import AugmentConfig
from videossl.data.loader.views import ViewSpec

__all__ = [
    "AugmentConfig",
    "EpochDataLoader",
    "ShardSource",
    "SkipLog",
    "VideoDataModule",
    "VideoShardDataset",
    "ViewSpec",
    "check_ram",
    "collate",
    "default_eval_views",
    "default_train_views",
    "make_loader",
    "ram_estimate",
    "resolve_shards",
    "to_clip",
    "view",
    "view_indices",
    "view_valid",
]
