"""The errors of the search package, in one place.

Every one is a ``LoraSearchError``: the CLI prints its message as one line on stderr
and exits with code 2, so each message says what is wrong and what to do about it.
"""

from __future__ import annotations

from .spaces import LoraSearchError


class UsageError(LoraSearchError):
    """Options that do not go together on the command line."""


class SearchError(LoraSearchError):
    """A search that cannot start or continue as asked."""


class StorageError(LoraSearchError):
    """A storage that cannot be opened: bad spec, unreachable server, missing folder."""


class WorkerError(LoraSearchError):
    """Workers or devices asked for that this host cannot provide."""


class PresetError(LoraSearchError):
    """A preset that cannot be found, read or written."""


__all__ = ["LoraSearchError", "PresetError", "SearchError", "StorageError", "UsageError", "WorkerError"]
