"""deployer/remote/safefs.py on real files: what it follows, what it refuses, that it never blocks.

The attacks as the job's user are in tests/cron/test_root_paths.py; here, the rules one by one.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest

from deployer.remote import safefs


def test_a_plain_path_is_walked_and_missing_folders_made(tmp_path: Path) -> None:
    fd = safefs.open_dir(str(tmp_path / "a/b/c"), 0o750)
    try:
        assert os.path.samestat(os.fstat(fd), (tmp_path / "a/b/c").stat())
    finally:
        os.close(fd)
    assert (tmp_path / "a/b/c").stat().st_mode & 0o777 == 0o750
    with pytest.raises(FileNotFoundError) as missing:
        safefs.open_dir(str(tmp_path / "x/y"))
    assert missing.value.filename == str(tmp_path / "x")


def test_a_link_in_a_folder_others_can_write_is_not_followed(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (shared / "logs").symlink_to(tmp_path / "elsewhere")
    os.chmod(shared, 0o777)  # anyone may have put that link there
    with pytest.raises(safefs.Unsafe) as refused:
        safefs.open_dir(str(shared / "logs" / "deeper"), 0o755)
    assert refused.value.filename == str(shared / "logs")
    assert "is a symlink that root did not make" in str(refused.value.strerror)
    assert not (tmp_path / "elsewhere" / "deeper").exists()


def test_our_own_link_in_our_own_folder_is_followed_relative_and_absolute(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    (tmp_path / "real").mkdir()
    (tmp_path / "rel").symlink_to("real")
    (tmp_path / "abs").symlink_to(tmp_path / "real")
    (tmp_path / "real" / "up").symlink_to("../real")
    for via in ("rel", "abs", "real/up"):
        fd = safefs.open_dir(str(tmp_path / via))
        try:
            assert os.path.samestat(os.fstat(fd), (tmp_path / "real").stat())
        finally:
            os.close(fd)


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "log")
    started = time.monotonic()
    for flags in (os.O_WRONLY | os.O_APPEND, os.O_RDONLY):
        with pytest.raises(safefs.Unsafe) as refused:
            safefs.open_file(str(tmp_path / "log"), flags)
        assert "not a regular file" in str(refused.value.strerror)
    assert time.monotonic() - started < 5


def test_a_hard_link_and_a_foreign_owner_are_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    os.link(tmp_path / "file", tmp_path / "other-name")
    with pytest.raises(safefs.Unsafe) as linked:
        safefs.open_file(str(tmp_path / "file"), os.O_RDONLY)
    assert linked.value.errno == errno.EMLINK and "has 2 names" in str(linked.value.strerror)
    (tmp_path / "other-name").unlink()
    with pytest.raises(safefs.Unsafe) as foreign:
        safefs.open_file(str(tmp_path / "file"), os.O_RDONLY, owners={os.geteuid() + 1})
    assert "belongs to uid" in str(foreign.value.strerror)
    os.close(safefs.open_file(str(tmp_path / "file"), os.O_RDONLY, owners={os.geteuid()}))


def test_a_final_link_is_never_opened_and_unlink_removes_only_a_file(tmp_path: Path) -> None:
    (tmp_path / "precious").write_text("keep")
    (tmp_path / "log").symlink_to(tmp_path / "precious")
    with pytest.raises(safefs.Unsafe) as refused:
        safefs.open_file(str(tmp_path / "log"), os.O_WRONLY | os.O_APPEND)
    assert refused.value.strerror == "is a symlink; refusing to follow it"
    with pytest.raises(safefs.Unsafe):
        safefs.unlink_file(str(tmp_path / "log"))  # not a regular file: left alone
    assert (tmp_path / "log").is_symlink() and (tmp_path / "precious").read_text() == "keep"
    assert safefs.unlink_file(str(tmp_path / "precious")) and not (tmp_path / "precious").exists()
    assert safefs.unlink_file(str(tmp_path / "precious")) is False
