"""Print pip constraints that pin every dependency of pyproject.toml at its floor.

`make test-floors` installs lora-search with these constraints, so each ">=X" in
pyproject.toml is a version that CI has installed and tested, torch's included (its
floor is a CUDA build from PyPI, about 2.5 GB, which runs on the CPU).
"""

import re
import tomllib
from pathlib import Path

project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]
requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
for requirement in requirements:
    match = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^\]]+\])?\s*>=\s*([^,;\s]+)", requirement.strip())
    if match is None:
        raise SystemExit(f"pyproject.toml: {requirement!r} has no '>=' floor to test; give it one")
    name, _, floor = match.groups()
    print(f"{name}=={floor}")
