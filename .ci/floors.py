"""Print the floors of pyproject.toml's ranges, for `make test-floors`.

    python3 .ci/floors.py            pip constraints pinning every dependency at its floor
    python3 .ci/floors.py --python   the Python floor (requires-python), e.g. 3.10

`make test-floors` creates its environment with that Python and installs lora-search with
those constraints, so each ">=X" in pyproject.toml is a version that CI has installed and
tested, torch's included (its floor is a CUDA build from PyPI, about 2.5 GB, which runs
on the CPU).
"""

import re
import sys
import tomllib
from pathlib import Path


def floor(requirement: str) -> tuple[str, str]:
    match = re.fullmatch(r"([A-Za-z0-9_.-]*)(\[[^\]]+\])?\s*>=\s*([^,;\s]+)", requirement.strip())
    if match is None:
        raise SystemExit(f"pyproject.toml: {requirement!r} has no '>=' floor to test; give it one")
    return match.group(1), match.group(3)


project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]
if sys.argv[1:] == ["--python"]:
    print(floor(project["requires-python"])[1])
else:
    for requirement in project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]:
        print("==".join(floor(requirement)))
