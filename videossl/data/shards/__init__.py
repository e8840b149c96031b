"""The write side: source trees and the synthetic generator → WebDataset shard sets.

``sources`` (UCF101 / HMDB51 / Kinetics / folder / CSV layouts → records) and ``synthetic`` (the
embedded motion dataset) feed ``make`` (``videossl data make-shards``: ``reencode`` probes and
re-encodes, ``plan`` assigns keys and shards); ``format`` is the on-disk contract (tar members,
``manifest.json``, split indexes) that the read side (:mod:`videossl.data.loader`) reads.
"""
