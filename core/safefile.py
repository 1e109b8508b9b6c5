"""File operations that never lose or overwrite data.

* A file is never overwritten.  An identical file already at the target counts
  as done (for a move the source is then removed), so a re-run after a crash
  finishes the job; a *different* file there is a :class:`TargetExistsError`.
* On one file system a move is ``link(src, dst)`` then ``unlink(src)``: at
  every instant the data is at the source, at the destination, or at both.
* Across file systems (and for copies) the data goes to a temporary file
  ``.<name>.<pid>.dcmpipe-part`` in the target folder, is fsynced (and, for a
  move, compared with the source), then linked to its final name; only then
  is the source removed.  A reader never sees a half-written file.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from .errors import DcmpipeError

PART_SUFFIX = ".dcmpipe-part"
_NO_LINK = {errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK, errno.EACCES}


class TargetExistsError(DcmpipeError):
    """A different file already has the target name."""

    def __init__(self, target):
        super().__init__(f"a different file already exists at {target}")
        self.target = target


def same_content(a: Path, b: Path, block: int = 1 << 20) -> bool:
    """True if both files hold the same bytes."""
    if os.path.getsize(a) != os.path.getsize(b):
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(block), fb.read(block)
            if x != y:
                return False
            if not x:
                return True


def makedirs(folder: Path) -> None:
    os.makedirs(folder, exist_ok=True)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _link_noreplace(src: Path, dst: Path) -> None:
    """Give ``src``'s data the name ``dst``; FileExistsError if ``dst`` exists."""
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno == errno.EEXIST or exc.errno not in _NO_LINK - {errno.EXDEV}:
            raise
        # A file system without hard links: rename, after checking the name is free.
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, "File exists", str(dst)) from None
        os.rename(src, dst)
        return
    os.unlink(src)


def _existing(src: Path, dst: Path, move: bool) -> str:
    """Handle a target that exists: identical counts as done, different raises."""
    if os.path.abspath(src) == os.path.abspath(dst):
        return "present"
    try:
        linked = os.path.samefile(src, dst)  # a move killed between link and unlink
    except FileNotFoundError:
        linked = False
    if not linked and (not os.path.isfile(dst) or not same_content(src, dst)):
        raise TargetExistsError(dst)
    if move:
        os.unlink(src)
    return "present"


def _link(src: str, dst: str) -> bool:
    """Hard-link ``src`` as ``dst`` (making its folder); False where links cannot be made."""
    for attempt in (1, 2):
        try:
            os.link(src, dst)
            return True
        except FileNotFoundError:
            if attempt == 2 or not os.path.lexists(src):
                raise
            makedirs(os.path.dirname(dst))
        except FileExistsError:
            raise
        except OSError as exc:
            if exc.errno not in _NO_LINK:
                raise
            return False
    return False


def transfer(src: Path, dst: Path, mode: str = "move") -> str:
    """Move or copy ``src`` to ``dst`` safely; return ``"moved"``, ``"copied"`` or ``"present"``.

    ``"present"``: an identical file was already at ``dst`` (a move then
    removed the source).  Raises :class:`TargetExistsError` for a different
    file at ``dst`` and ``OSError`` for I/O problems (the source is then intact).
    """
    move = mode == "move"
    src, dst = os.fspath(src), os.fspath(dst)
    if move:  # the common case first: one link() call, no look-ups before it
        try:
            linked = _link(src, dst)
        except FileExistsError:
            return _existing(src, dst, move)
        if linked:
            os.unlink(src)
            return "moved"
    elif os.path.lexists(dst):
        return _existing(src, dst, move)
    src, dst = Path(src), Path(dst)
    makedirs(dst.parent)
    tmp = dst.parent / f".{dst.name}.{os.getpid()}{PART_SUFFIX}"
    try:
        with open(src, "rb") as fin, open(tmp, "xb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
            fout.flush()
            os.fsync(fout.fileno())
        if move and not same_content(src, tmp):
            raise OSError(errno.EIO, f"copy of {src} differs from the original after writing")
        try:
            _link_noreplace(tmp, dst)
        except FileExistsError:
            return _existing(src, dst, move)
        _fsync_dir(dst.parent)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    if move:
        os.unlink(src)
        return "moved"
    return "copied"


def write_atomic(dst: Path, data: bytes, *, fsync: bool = True) -> str:
    """Write ``data`` to ``dst`` through a temporary file; never overwrite.

    Returns ``"written"``, or ``"present"`` when ``dst`` already holds exactly
    ``data``; raises :class:`TargetExistsError` when it holds something else.
    ``fsync=False`` leaves the flush to disk to the caller (one ``os.sync()``
    after many small derived files costs far less than one fsync each); the
    file still appears whole under its name, never half written.
    """
    dst = Path(dst)
    if os.path.lexists(dst):
        if os.path.isfile(dst) and Path(dst).read_bytes() == data:
            return "present"
        raise TargetExistsError(dst)
    makedirs(dst.parent)
    tmp = dst.parent / f".{dst.name}.{os.getpid()}{PART_SUFFIX}"
    try:
        with open(tmp, "xb") as out:
            out.write(data)
            out.flush()
            if fsync:
                os.fsync(out.fileno())
        try:
            _link_noreplace(tmp, dst)
        except FileExistsError:
            if Path(dst).read_bytes() == data:
                return "present"
            raise TargetExistsError(dst) from None
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return "written"


def remove_stale_parts(folder: Path) -> list[Path]:
    """Remove temporary files left in ``folder`` by processes that no longer run."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        if not (name.startswith(".") and name.endswith(PART_SUFFIX)):
            continue
        pid_text = name[: -len(PART_SUFFIX)].rsplit(".", 1)[-1]
        if pid_text.isdigit() and process_alive(int(pid_text)):
            continue
        try:
            os.unlink(os.path.join(folder, name))
            removed.append(Path(folder, name))
        except OSError:
            pass
    return removed


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (the owner of a part file or a lock)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
