"""Helpers for the storescp tests: DCMTK binaries, a server subprocess, test files, a raw sender."""

from __future__ import annotations

import functools
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
EMRI = REPO / "tests" / "data" / "emri_small.dcm"
MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
RAW_STORAGE = "1.2.840.10008.5.1.4.1.1.66"


@functools.lru_cache(maxsize=None)
def dcmtk(name: str) -> str | None:
    """The DCMTK program ``name`` (a pynetdicom app of the same name may come first on PATH)."""
    candidates = [f"/usr/bin/{name}"] + [os.path.join(d, name) for d in os.environ.get("PATH", "").split(os.pathsep)]
    for path in candidates:
        if not os.access(path, os.X_OK):
            continue
        try:
            out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        if "dcmtk" in out.lower():
            return path
    return None


def need(name: str) -> str:
    path = dcmtk(name)
    if path is None:
        pytest.skip(f"DCMTK {name} is not installed")
    return path


def storescu(port: int, *paths, aec="STORESCP", aet="STORESCU", extra=(), timeout=120):
    """Run DCMTK storescu (TCP_NODELAY set); returns the CompletedProcess."""
    args = [need("storescu"), "-aet", aet, "-aec", aec, *extra, "127.0.0.1", str(port), *map(str, paths)]
    if any(Path(p).is_dir() for p in paths):
        args.insert(1, "+sd")
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env={**os.environ, "TCP_NODELAY": "1"})


class Server:
    """``dcmpipe storescp`` in a subprocess, on a free port; its stderr collected in ``lines``."""

    def __init__(self, store: Path, *options: str):
        self.store = Path(store)
        cmd = [sys.executable, "-m", "dcmpipe", "storescp", "--store", str(store), *options, "0"]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.port = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.lines.append(line.rstrip("\n"))
            found = re.search(r"listening on port (\d+)", line)
            if found:
                self.port = int(found.group(1))
                break
        if self.port is None:
            self.proc.kill()
            raise AssertionError("storescp did not start:\n" + "\n".join(self.lines) + self.proc.stderr.read())
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self):
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if re.search(pattern, line):
                    return line
            time.sleep(0.05)
        raise AssertionError(f"no log line matching {pattern!r}; log:\n{self.log()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.thread.join(5)
        return self.proc.returncode


def make_study(folder: Path, description: str, n: int = 3, study_id: str = "1", patient: str = "TEST^A") -> list[Path]:
    from dcmpipe.demo import SeriesPlan, StudyPlan, generate

    return generate(folder, [StudyPlan(study_id, patient, "P" + study_id, description, [SeriesPlan(1, "T1", slices=n)])],
                    names=f"S{study_id}_{{n:04d}}")


def copy_with(src: Path, dst: Path, **changes) -> Path:
    """A copy of ``src`` with some elements changed (keyword=value), written by pydicom."""
    from pydicom import dcmread
    from pydicom.uid import generate_uid

    ds = dcmread(src)
    for key, value in changes.items():
        if key == "SOPClassUID":
            ds.file_meta.MediaStorageSOPClassUID = value
        setattr(ds, key, value)
    ds.SOPInstanceUID = changes.get("SOPInstanceUID", generate_uid())
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst, enforce_file_format=True)
    return dst


def dataset_bytes(path: Path) -> bytes:
    """The bytes of a DICOM file after its File Meta group."""
    raw = Path(path).read_bytes()
    assert raw[128:132] == b"DICM"
    (length,) = struct.unpack_from("<L", raw, 132 + 8)
    return raw[132 + 12 + length:]


def stored_files(store: Path) -> list[Path]:
    return sorted(p for p in Path(store).rglob("*") if p.is_file() and not p.name.startswith("."))


def wait_until(check, timeout: float = 30, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(step)
    return check()


# -- a raw sender that can stop in the middle of a data set ----------------------------------


def _item(kind: int, value: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(value)) + value


def associate_rq(called: str, calling: str, sop_class: str, syntax: str = "1.2.840.10008.1.2.1") -> bytes:
    pc = _item(0x20, bytes([1, 0, 0, 0]) + _item(0x30, sop_class.encode()) + _item(0x40, syntax.encode()))
    user = _item(0x50, struct.pack(">BBHL", 0x51, 0, 4, 16384) + _item(0x52, b"1.2.3.4"))
    body = (struct.pack(">HH", 1, 0) + called.ljust(16).encode() + calling.ljust(16).encode() + b"\0" * 32
            + _item(0x10, b"1.2.840.10008.3.1.1.1") + pc + user)
    return struct.pack(">BBL", 1, 0, len(body)) + body


def c_store_command(sop_class: str, sop_instance: str) -> bytes:
    def el(elem, value):
        return struct.pack("<HHL", 0, elem, len(value)) + value

    def ui(text):
        raw = text.encode()
        return raw + b"\0" if len(raw) % 2 else raw

    body = (el(2, ui(sop_class)) + el(0x100, struct.pack("<H", 1)) + el(0x110, struct.pack("<H", 1))
            + el(0x700, struct.pack("<H", 0)) + el(0x800, struct.pack("<H", 0)) + el(0x1000, ui(sop_instance)))
    return el(0, struct.pack("<L", len(body))) + body


def pdv(context: int, control: int, data: bytes) -> bytes:
    value = struct.pack(">LBB", len(data) + 2, context, control) + data
    return struct.pack(">BBL", 4, 0, len(value)) + value


SENDER = r'''
import socket, sys, time
sys.path.insert(0, {helpers!r})
from _storescp_helpers import associate_rq, c_store_command, pdv
port, sop_class, sop_instance, path = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
data = open(path, "rb").read()
s = socket.create_connection(("127.0.0.1", port))
s.sendall(associate_rq("STORESCP", "KILLED", sop_class))
head = s.recv(6)
assert head[0] == 2, head
s.recv(65536)
s.sendall(pdv(1, 3, c_store_command(sop_class, sop_instance)))
s.sendall(pdv(1, 0, data[: len(data) // 2]))   # half of the data set, not the last fragment
print("sent half", flush=True)
time.sleep(3600)
'''


def start_half_sender(port: int, sop_class: str, sop_instance: str, data_path: Path) -> subprocess.Popen:
    code = SENDER.format(helpers=str(Path(__file__).resolve().parent))
    return subprocess.Popen([sys.executable, "-c", code, str(port), sop_class, sop_instance, str(data_path)],
                            stdout=subprocess.PIPE, text=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
