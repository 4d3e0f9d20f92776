"""Fixtures shared by several test folders."""

from __future__ import annotations

import sys
from pathlib import Path

# --import-mode=importlib keeps tests/ off sys.path; the shared fixture modules live here.
sys.path.insert(0, str(Path(__file__).parent))

from postgres_cluster import postgres_cluster, postgres_url  # noqa: E402,F401  (fixtures)
