"""Thin wrapper: ``python tools/bench_data.py ARGS`` == ``videossl bench data ARGS`` (see videossl/bench/data.py)."""

import sys

from videossl.bench.data import main

if __name__ == "__main__":
    sys.exit(main())
