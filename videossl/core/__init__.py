"""Contracts every layer may use: optimiser configuration, the one checkpoint reader, shared metrics.

Nothing here imports another videossl package (only :mod:`videossl.errors`), so data, models,
methods and evaluation can all depend on it without depending on each other.
"""
