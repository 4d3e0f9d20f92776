import os
import stat

import pytest

from lora_search._files import write_atomically


@pytest.fixture
def umask():
    """Sets the process umask for a test (os.umask), and restores it after."""
    saved = os.umask(0o022)
    yield os.umask
    os.umask(saved)


def permissions(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_a_new_file_gets_the_permissions_open_would_give_it(tmp_path, umask, mask, expected):
    umask(mask)
    target = tmp_path / "preset.yaml"
    write_atomically(target, "a: 1\n")
    assert target.read_text() == "a: 1\n" and permissions(target) == expected


def test_a_replaced_file_keeps_its_permissions_and_nothing_else_is_left(tmp_path, umask):
    umask(0o022)
    target = tmp_path / "preset.yaml"
    target.write_text("old\n")
    target.chmod(0o640)
    write_atomically(target, "new\n")
    assert target.read_text() == "new\n" and permissions(target) == 0o640
    assert [path.name for path in tmp_path.iterdir()] == ["preset.yaml"]


def test_a_failed_write_leaves_the_old_file_intact(tmp_path):
    target = tmp_path / "preset.yaml"
    target.write_text("old\n")
    with pytest.raises(UnicodeEncodeError):
        write_atomically(target, "half \udcff")  # a lone surrogate cannot be encoded: the write fails midway
    assert target.read_text() == "old\n" and [path.name for path in tmp_path.iterdir()] == ["preset.yaml"]
