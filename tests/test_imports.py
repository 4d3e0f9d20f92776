"""The light parts stay light: no torch, transformers or peft where no training happens."""

import ast
import json
import subprocess
import sys
from pathlib import Path

HEAVY = ("torch", "transformers", "peft")


def _loaded_after(code):
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_spaces_never_imports_heavy_libraries():
    code = (
        "import lora_search.spaces as s, optuna\n"
        "r = s.load_space('memory-constrained').resolve(s.RunProfile(4000))\n"
        "r.params_for(r.baseline())\n"
        "s.check_config(s.get_preset('standard'), s.RunProfile(4000))"
    )
    assert _loaded_after(code) == []


def _cli_modules(*argv):
    code = (
        "import sys\n"
        f"sys.argv = ['lora-search', *{list(argv)!r}]\n"
        "from lora_search._cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass"
    )
    return _loaded_after(code)


def test_help_never_imports_torch():
    assert _cli_modules("--help") == []
    assert _cli_modules("spaces", "--help") == []
    assert _cli_modules("check", "--help") == []
    assert _cli_modules("spaces", "show", "standard", "--cpu") == []
    assert _cli_modules("run", "--help") == []
    assert _cli_modules("show", "--help") == []


def _imported_by(module: str) -> set[str]:
    """The sibling modules ``search/<module>.py`` imports, at its top or inside functions."""
    tree = ast.parse((Path(__file__).resolve().parents[1] / "search" / f"{module}.py").read_text())
    return {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module}


def test_the_trial_loop_never_imports_its_launcher_or_the_run():
    # the launcher (_workers) imports the loop, never the reverse: no cycle between them
    assert "_loop" in _imported_by("_workers")
    assert not _imported_by("_loop") & {"_workers", "_worker_main", "_engine", "_prepare"}


def test_console_script_help_works():
    script = Path(sys.executable).with_name("lora-search")
    result = subprocess.run([str(script), "spaces", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "suggest" in result.stdout


def test_every_public_name_resolves():
    import lora_search

    assert all(getattr(lora_search, name) is not None for name in lora_search.__all__)
