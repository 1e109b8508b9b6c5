"""safefile: the never-overwrite file operations every exporter uses."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from dcmpipe import safefile
from dcmpipe.safefile import TargetExistsError, remove_stale_parts, transfer, write_atomic


@pytest.fixture
def src(tmp_path):
    path = tmp_path / "a" / "file.dcm"
    path.parent.mkdir()
    path.write_bytes(b"DICM" * 1000)
    return path


def test_move_on_one_file_system(src, tmp_path):
    dst = tmp_path / "b" / "c" / "moved"
    assert transfer(src, dst, "move") == "moved"
    assert dst.read_bytes() == b"DICM" * 1000 and not src.exists()


def test_move_interrupted_between_link_and_unlink_is_finished(src, tmp_path):
    dst = tmp_path / "moved"
    os.link(src, dst)  # what a kill between the two system calls leaves
    assert transfer(src, dst, "move") == "present"
    assert not src.exists() and dst.read_bytes() == b"DICM" * 1000


def test_different_file_at_target_is_never_overwritten(src, tmp_path):
    dst = tmp_path / "taken"
    dst.write_bytes(b"other")
    for mode in ("move", "copy"):
        with pytest.raises(TargetExistsError, match="a different file already exists"):
            transfer(src, dst, mode)
    assert dst.read_bytes() == b"other" and src.exists()


def test_identical_file_at_target_counts_as_done(src, tmp_path):
    dst = tmp_path / "same"
    dst.write_bytes(src.read_bytes())
    assert transfer(src, dst, "copy") == "present" and src.exists()
    assert transfer(src, dst, "move") == "present" and not src.exists()


def test_copy_across_file_systems_path(src, tmp_path, monkeypatch):
    """Where link fails with EXDEV the data goes through a fsynced temporary file."""
    real_link = os.link

    def no_cross_link(a, b, *args, **kw):
        if "part" not in str(a):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_link(a, b, *args, **kw)

    monkeypatch.setattr(safefile.os, "link", no_cross_link)
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(safefile.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    dst = tmp_path / "x" / "moved"
    assert transfer(src, dst, "move") == "moved"
    assert dst.read_bytes() == b"DICM" * 1000 and not src.exists() and synced
    assert not list(dst.parent.glob(".*"))


def test_file_system_without_hard_links(src, tmp_path, monkeypatch):
    def refuse(a, b, *args, **kw):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(safefile.os, "link", refuse)
    dst = tmp_path / "moved"
    assert transfer(src, dst, "move") == "moved"
    assert dst.read_bytes() == b"DICM" * 1000 and not src.exists()


def test_failed_write_leaves_source_and_no_partial_file(src, tmp_path, monkeypatch):
    monkeypatch.setattr(safefile.os, "link", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.EXDEV, "x")))

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safefile.os, "fsync", full_disk)
    dst = tmp_path / "out" / "f"
    with pytest.raises(OSError, match="No space left"):
        transfer(src, dst, "move")
    assert src.exists() and not dst.exists() and not list(dst.parent.iterdir())


def test_write_atomic(tmp_path):
    dst = tmp_path / "d" / "info"
    assert write_atomic(dst, b"one") == "written"
    assert write_atomic(dst, b"one") == "present"
    with pytest.raises(TargetExistsError):
        write_atomic(dst, b"two")
    assert dst.read_bytes() == b"one"


def test_stale_parts_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".x.{dead.stdout.strip()}{safefile.PART_SUFFIX}"
    mine = tmp_path / f".y.{os.getpid()}{safefile.PART_SUFFIX}"
    stale.write_bytes(b"half")
    mine.write_bytes(b"in progress")
    assert remove_stale_parts(tmp_path) == [stale]
    assert mine.exists()
