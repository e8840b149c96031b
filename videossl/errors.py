"""User-facing errors.

Anything a user can cause (bad flag, missing path, malformed shard set) raises
:class:`VideosslError`; the CLI prints it as one line and exits non-zero, without a traceback.
"""


class VideosslError(Exception):
    """A problem with the user's input that the user can fix; printed as one line by the CLI."""
