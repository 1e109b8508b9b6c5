"""storescp's storage: received bytes to files, studies tracked until complete, retention.

* :class:`StudyStore` writes each object as received to a hidden temporary
  file in the store (``.<uid>.<n>.<pid>.dcmpipe-part``), links it to
  ``STORE/<study folder>/<prefix>.<SOP Instance UID>`` when complete and only
  then reports success.  A dropped association or a failed write leaves no file.
* It keeps, per study folder, the time of the last object received, and a
  hidden ``.receiving`` marker (holding the server's process id) while the
  study is open; :meth:`StudyStore.due` hands over the studies quiet for the
  end-of-study timeout.
* :func:`clean` is the retention clean-up: study folders older than a limit.
"""

from __future__ import annotations

import io
import itertools
import logging
import os
import shutil
import threading
import time
from pathlib import Path

from dcmpipe.safefile import process_alive

log = logging.getLogger("dcmpipe")

MARKER = ".receiving"
HEAD = 65536  # data set bytes kept to find the study early
_STUDY_UID = 0x0020000D
_counter = itertools.count(1)


_LONG_VRS = frozenset((b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"))
_SHORT_VRS = frozenset(v.encode() for v in "AE AS AT CS DA DS DT FD FL IS LO LT PN SH SL SS ST TM UI UL US".split())
_EXPLICIT_LE, _IMPLICIT_LE = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"


def quick_study_uid(data: bytes, syntax: str):
    """The top-level Study Instance UID from the start of a little-endian data set.

    Walks the elements with ``struct``; returns the UID, ``None`` when the data set
    has none, or ``False`` when it cannot tell (another transfer syntax, an
    undefined length on the way, not enough bytes): then ask :func:`study_uid_of`.
    """
    import struct

    explicit = syntax == _EXPLICIT_LE or syntax.startswith("1.2.840.10008.1.2.4.") or syntax == "1.2.840.10008.1.2.5"
    if not explicit and syntax != _IMPLICIT_LE:
        return False
    head, long_vrs, short_vrs, n, pos = struct.Struct("<HHL").unpack_from, _LONG_VRS, _SHORT_VRS, len(data), 0
    short, ul = struct.Struct("<HH2sH").unpack_from, struct.Struct("<L").unpack_from
    while pos + 8 <= n:
        if explicit:
            group, elem, vr, length = short(data, pos)
            if vr in long_vrs:
                if pos + 12 > n:
                    return False
                length = ul(data, pos + 8)[0]
                start = pos + 12
            elif vr in short_vrs:
                start = pos + 8
            else:  # not explicit VR after all, or damaged: let pydicom decide
                return False
        else:
            group, elem, length = head(data, pos)
            start = pos + 8
        tag = group << 16 | elem
        if tag >= 0x0020000D:
            if tag > 0x0020000D:
                return None
            if start + length > n:
                return False
            return data[start:start + length].rstrip(b"\0 ").decode("ascii", "replace") or None
        if length == 0xFFFFFFFF:
            return False
        pos = start + length
    return False


def study_uid_of(data) -> str | None:
    """The Study Instance UID of a file or of the first bytes of one (None if not found)."""
    from dcmpipe.errors import NotDicomError
    from dcmpipe.header import read_header

    try:
        value = read_header(data, frozenset({_STUDY_UID})).get(_STUDY_UID)
    except (NotDicomError, OSError, ValueError, EOFError, KeyError, IndexError, TypeError):
        return None
    except Exception:  # pydicom on a truncated head may raise anything
        return None
    return str(value) if value else None


_UID_CHARS = frozenset("0123456789.")


def safe_uid(uid: str | None, fallback: str) -> str:
    """A UID as a file name: as it is when it is a plain UID, else made safe."""
    if uid and len(uid) <= 64 and uid[0] != "." and _UID_CHARS.issuperset(uid):
        return uid
    from dcmpipe.naming import component

    return component(uid, fallback)


class Incoming:
    """One object arriving: a temporary file in the store, written as the bytes come."""

    def __init__(self, store: "StudyStore", calling: str, sop_class: str, sop_instance: str, syntax: str):
        from ._storescp_net import file_meta

        self.store, self.sop_class, self.sop_instance = store, sop_class, sop_instance
        self.started = time.monotonic()
        self.study = None
        self.error: OSError | None = None
        self.head = bytearray()
        self.syntax = syntax
        self.meta = file_meta(sop_class, sop_instance, syntax, calling)
        safe = safe_uid(sop_instance, "UNKNOWN")
        self.tmp = f"{store.root_text}/.{safe}.{next(_counter)}.{os.getpid()}.dcmpipe-part"
        self.fd = None
        self.pending = self.meta  # written with the first data fragment: one system call for a small object
        try:
            self.fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            self._fail(exc)
        store.opened(self)

    def _fail(self, exc: OSError) -> None:
        if self.error is None:
            self.error = exc
            log.error("%s: cannot write %s: %s", self.sop_instance, self.tmp, exc.strerror or exc)
        self._drop()

    def _drop(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None
        try:
            os.unlink(self.tmp)
        except OSError:
            pass

    def _write(self, data) -> None:
        fd, view = self.fd, memoryview(data)
        while view:
            view = view[os.write(fd, view):]

    def write(self, chunk) -> None:
        if len(self.head) < HEAD:
            self.head += chunk[: HEAD - len(self.head)]
            if self.study is None:  # known early, the study is held open while this object arrives
                found = quick_study_uid(self.head, self.syntax)
                if found is not False:
                    self.study = found or ""
                elif len(self.head) >= HEAD:
                    self.study = self._study()
        if self.error is not None:
            return
        try:
            if self.pending:
                data, self.pending = self.pending + chunk, b""
                self._write(data)
            else:
                self._write(chunk)
        except OSError as exc:
            self._fail(exc)

    def _study(self, complete: bool = False) -> str | None:
        found = quick_study_uid(self.head, self.syntax)
        if found is not False:
            return found
        if complete and len(self.head) >= HEAD:
            return study_uid_of(self.tmp)
        return study_uid_of(io.BytesIO(self.meta + self.head))

    def discard(self) -> None:
        self._drop()
        self.store.closed(self)

    def finish(self) -> int:
        """Close, name and link the file; the C-STORE status to answer."""
        from ._storescp_net import CANNOT_UNDERSTAND, OUT_OF_RESOURCES, SUCCESS

        try:
            if self.error is None:
                try:
                    if self.pending:
                        self._write(self.pending)
                        self.pending = b""
                    if self.store.fsync:
                        os.fsync(self.fd)
                    fd, self.fd = self.fd, None
                    os.close(fd)
                    if self.study is None:
                        self.study = self._study(complete=True)
                    self.study = self.study or None
                    self.store.place(self)
                except OSError as exc:
                    self._fail(exc)
                except Exception as exc:  # a bug must not leave a file behind or claim success
                    log.error("%s: cannot store: %s: %s", self.sop_instance, type(exc).__name__, exc)
                    self._drop()
                    return CANNOT_UNDERSTAND
            return SUCCESS if self.error is None else OUT_OF_RESOURCES
        finally:
            self.store.closed(self)


class StudyStore:
    """The store folder: objects in, complete studies out."""

    def __init__(self, root: Path, prefixes: dict, fsync: bool = False, on_stored=None):
        from dcmpipe.safefile import remove_stale_parts

        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.root_text = str(self.root)
        self.prefixes, self.fsync, self.on_stored = prefixes, fsync, on_stored
        self.lock = threading.Lock()
        self.last: dict[str, float] = {}  # study folder name -> monotonic time of the last object
        self.uids: dict[str, str] = {}
        self.inflight: set[Incoming] = set()
        self.folders: set[str] = set()
        self.stored = self.failed = 0
        for stale in remove_stale_parts(self.root):
            log.warning("removed %s, left by a receiver that stopped mid-transfer", stale)
        self.recover()

    # -- the network side --

    def begin(self, assoc, sop_class: str, sop_instance: str, syntax: str) -> Incoming:
        return Incoming(self, assoc.calling, sop_class, sop_instance, syntax)

    def opened(self, incoming: Incoming) -> None:
        with self.lock:
            self.inflight.add(incoming)

    def closed(self, incoming: Incoming) -> None:
        with self.lock:
            self.inflight.discard(incoming)

    def folder_name(self, study: str | None) -> str:
        return safe_uid(study, "UNKNOWN_STUDY")

    def file_name(self, sop_class: str, sop_instance: str) -> str:
        return f"{self.prefixes.get(sop_class, 'UNKNOWN')}.{safe_uid(sop_instance, 'UNKNOWN')}"

    def place(self, incoming: Incoming) -> None:
        """Link the finished temporary file to its name in its study folder; never overwrite."""
        from dcmpipe.safefile import same_content

        name = self.folder_name(incoming.study)
        folder = f"{self.root_text}/{name}"
        with self.lock:
            new_study = name not in self.last
            self.last[name] = time.monotonic()  # the study stays open from here on
            if incoming.study:
                self.uids[name] = incoming.study
        if name not in self.folders:
            os.makedirs(folder, exist_ok=True)
            self.folders.add(name)
        if new_study:
            Path(folder, MARKER).write_text(f"{os.getpid()}\n")
        base = self.file_name(incoming.sop_class, incoming.sop_instance)
        target = f"{folder}/{base}"
        for n in range(2, 1000):
            try:
                try:
                    os.link(incoming.tmp, target)
                except FileNotFoundError:  # the folder went away (removed by hand): make it again
                    os.makedirs(folder, exist_ok=True)
                    os.link(incoming.tmp, target)
                break
            except FileExistsError:
                if same_content(incoming.tmp, target):
                    log.info("%s: already stored (same content)", target)
                    break
                target = f"{folder}/{base}.{n}"
                log.warning("%s/%s: a different object with this name exists; kept as %s", folder, base,
                            os.path.basename(target))
        os.unlink(incoming.tmp)
        with self.lock:
            self.last[name] = time.monotonic()
            self.stored += 1
        if self.on_stored is not None:
            self.on_stored(Path(target), incoming.study)

    # -- studies --

    def recover(self) -> None:
        """Studies left open by a receiver that stopped: treat them as arriving now."""
        for entry in os.scandir(self.root):
            marker = Path(entry.path) / MARKER
            if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False) or not marker.is_file():
                continue
            try:
                pid = int(marker.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and pid != os.getpid() and process_alive(pid):
                continue
            log.warning("%s: study left open by a stopped receiver; completed after the timeout", entry.path)
            marker.write_text(f"{os.getpid()}\n")
            self.last[entry.name] = time.monotonic()

    def receiving(self, name: str) -> bool:
        with self.lock:
            return name in self.last

    def due(self, timeout: float, now: float | None = None) -> list[tuple[Path, str | None]]:
        """Studies with no object for ``timeout`` seconds and none in transit: taken off the open list."""
        now = time.monotonic() if now is None else now
        done = []
        with self.lock:
            busy = {self.folder_name(i.study) for i in self.inflight if i.study is not None}
            # An object whose study is not known yet holds back every study, but only for a while:
            # a sender that hangs mid-object must not stop all studies from completing.
            unknown = any(i.study is None and now - i.started < timeout for i in self.inflight)
            for name, last in list(self.last.items()):
                if now - last >= timeout and name not in busy and not unknown:
                    del self.last[name]
                    done.append((self.root / name, self.uids.pop(name, None)))
        return done

    def closed_study(self, folder: Path) -> None:
        """After the study's recipe: drop the marker unless the study reopened meanwhile."""
        with self.lock:
            if folder.name in self.last:
                return
            try:
                os.unlink(folder / MARKER)
            except OSError:
                pass


# -- retention -------------------------------------------------------------------------


def parse_age(text: str) -> float:
    """'30d', '12h', '90m', '45s' or a plain number of days -> seconds."""
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1, "w": 7 * 86400}
    raw = str(text).strip().lower()
    unit = raw[-1:] if raw[-1:] in units else "d"
    number = raw[:-1] if raw[-1:] in units else raw
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"{text!r} is not an age: write 30d, 12h, 90m or 45s") from None
    if value < 0:
        raise ValueError(f"{text!r}: an age cannot be negative")
    return value * units[unit]


def _newest(folder: str) -> tuple[float, int]:
    newest, count = os.lstat(folder).st_mtime, 0
    for top, dirs, files in os.walk(folder):
        for name in files:
            try:
                st = os.lstat(os.path.join(top, name))
            except OSError:
                continue
            count += 1
            newest = max(newest, st.st_mtime)
    return newest, count


def _open_elsewhere(folder: str) -> bool:
    try:
        pid = int(Path(folder, MARKER).read_text().strip() or 0)
    except (OSError, ValueError):
        return False
    return pid > 0 and process_alive(pid)


def clean(store: Path, older_than: float, dry_run: bool = False, receiving=None, now: float | None = None):
    """Delete (or list) study folders of ``store`` whose newest file is older than ``older_than`` seconds.

    Only real folders directly inside ``store`` are considered: a symbolic
    link, a file, a hidden entry or a study still receiving (its
    ``.receiving`` marker names a running process, or ``receiving(name)``) is
    left alone.  Returns ``[(folder, age in seconds, files, what)]``.
    """
    now = time.time() if now is None else now
    store = Path(store)
    done = []
    for entry in sorted(os.scandir(store), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        if entry.is_symlink():
            log.warning("%s: a symbolic link, not a study folder; left alone", entry.path)
            continue
        if not entry.is_dir(follow_symlinks=False):
            continue
        if (receiving is not None and receiving(entry.name)) or _open_elsewhere(entry.path):
            log.info("%s: still receiving; left alone", entry.path)
            continue
        newest, count = _newest(entry.path)
        age = now - newest
        if age <= older_than:
            continue
        if dry_run:
            done.append((Path(entry.path), age, count, "would delete"))
            continue
        try:
            shutil.rmtree(entry.path)
            done.append((Path(entry.path), age, count, "deleted"))
        except OSError as exc:
            log.error("%s: cannot delete: %s", entry.path, exc.strerror or exc)
            done.append((Path(entry.path), age, count, f"failed: {exc.strerror or exc}"))
    return done
