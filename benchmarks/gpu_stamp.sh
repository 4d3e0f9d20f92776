#!/usr/bin/env bash
# One line naming the project's sources (the package's .py and .yaml files and pyproject.toml):
# gpu_bundle.sh stores it with the wheel it builds, gpu_device.sh compares it with the tree it runs in.
set -euo pipefail
cd "$(dirname "$0")/.."
find search objectives spaces -type f \( -name '*.py' -o -name '*.yaml' \) -print0 | LC_ALL=C sort -z |
  xargs -0 sha256sum | cat - <(sha256sum pyproject.toml) | sha256sum | cut -d' ' -f1
