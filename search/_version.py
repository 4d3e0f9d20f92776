"""The installed lora-search's version: what --version prints and what a study records."""

from __future__ import annotations


def installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lora-search")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"
