"""The receiving end of the DICOM upper layer for storescp: associations, C-STORE, C-ECHO.

pynetdicom's association machinery polls its queues with 1 ms sleeps in two
threads and decodes every command with pydicom: ~350 objects/s on loopback
here, far from a scanner's pace.  The data phase of a storage SCP is small,
so it is done here directly on the socket:

* association: pynetdicom's PDU classes decode the A-ASSOCIATE-RQ and encode
  the A-ASSOCIATE-AC/RJ (done once per association, speed does not matter);
* data: P-DATA-TF PDUs are parsed here; the command set (implicit VR little
  endian, a handful of elements) is decoded with ``struct``; the data set
  fragments are written as they arrive to a hidden temporary file in the
  store, after a File Meta header built from the command and the accepted
  transfer syntax: the bytes are never decoded or re-encoded;
* a complete object is linked to its final name (never over another file),
  then the C-STORE-RSP is sent: success only for data that is on disk.

Imported only by plugins/storescp.py, inside functions (it imports pynetdicom).
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

log = logging.getLogger("dcmpipe")

VERIFICATION = "1.2.840.10008.1.1"
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
IMPLEMENTATION_UID = "1.2.826.0.1.3680043.10.1478.1"  # dcmpipe's implementation class UID
IMPLEMENTATION_VERSION = "DCMPIPE_010"
EXPLICIT_LE, IMPLICIT_LE = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"
MAX_PDU = 262144  # what we tell senders we receive per PDU

# Status codes of the C-STORE-RSP (PS3.4 B.2.3, PS3.7 C.4.2.1.4)
SUCCESS, OUT_OF_RESOURCES, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xC000

_PDU_HEAD = struct.Struct(">BBL")
_PDV_HEAD = struct.Struct(">LBB")
_ELEM = struct.Struct("<HHL")


class Refused(Exception):
    """The association is refused: result, source, reason (PS3.8 9.3.4)."""

    def __init__(self, why: str, result: int, source: int, reason: int):
        super().__init__(why)
        self.result, self.source, self.reason = result, source, reason


@dataclass
class Profile:
    """Which SOP classes are accepted, which refused, which transfer syntaxes preferred."""

    name: str
    accept: list
    refuse: list = field(default_factory=list)
    prefer: list = field(default_factory=lambda: [EXPLICIT_LE, IMPLICIT_LE])
    description: str = ""
    storage: frozenset = frozenset()

    def accepts(self, uid: str) -> bool:
        if uid == VERIFICATION:
            return True
        if any(uid == r or fnmatch(uid, r) for r in self.refuse):
            return False
        for pattern in self.accept:
            if pattern == "@storage":
                if uid in self.storage:
                    return True
            elif uid == pattern or fnmatch(uid, pattern):
                return True
        return False

    def choose(self, offered: list[str]) -> str:
        for ts in self.prefer:
            if ts in offered:
                return ts
        return offered[0]


@dataclass
class Policy:
    """What the server accepts: its AE title, the callers, the profile, the limits."""

    ae_title: str
    profile: Profile
    allow: list = field(default_factory=list)  # [(AE title, {ip, ...} or None)]
    max_associations: int = 10
    idle_timeout: float = 600.0  # an association silent this long is aborted

    def check(self, called: str, calling: str, peer_ip: str) -> None:
        if called != self.ae_title:
            raise Refused(f"called AE title {called!r} is not ours ({self.ae_title!r})", 1, 1, 7)
        if self.allow and not any(
            calling == ae and (ips is None or peer_ip in ips) for ae, ips in self.allow
        ):
            raise Refused(f"calling AE title {calling!r} from {peer_ip} is not on the allow list", 1, 1, 3)


def file_meta(sop_class: str, sop_instance: str, syntax: str, source_ae: str) -> bytes:
    """Preamble, 'DICM' and the File Meta group, explicit VR little endian."""

    def text(tag: int, vr: bytes, value: str, pad: bytes) -> bytes:
        raw = value.encode("ascii")
        if len(raw) % 2:
            raw += pad
        return struct.pack("<HH2sH", 2, tag, vr, len(raw)) + raw

    body = b"".join((
        struct.pack("<HH2sHL", 2, 1, b"OB", 0, 2) + b"\x00\x01",
        text(2, b"UI", sop_class, b"\0"),
        text(3, b"UI", sop_instance, b"\0"),
        text(0x10, b"UI", syntax, b"\0"),
        text(0x12, b"UI", IMPLEMENTATION_UID, b"\0"),
        text(0x13, b"SH", IMPLEMENTATION_VERSION, b" "),
        text(0x16, b"AE", source_ae or "UNKNOWN", b" ") if source_ae else b"",
    ))
    return b"\0" * 128 + b"DICM" + struct.pack("<HH2sHL", 2, 0, b"UL", 4, len(body)) + body


def decode_command(raw: bytes) -> dict:
    """The elements of a command set (implicit VR little endian): {element: bytes}."""
    out, pos, end = {}, 0, len(raw)
    while pos + 8 <= end:
        group, elem, length = _ELEM.unpack_from(raw, pos)
        pos += 8
        out[elem] = raw[pos:pos + length]
        pos += length
    return out


def _uid(value: bytes | None) -> str:
    return (value or b"").rstrip(b"\0 ").decode("ascii", "replace")


def _us(value: bytes | None) -> int:
    return struct.unpack("<H", value[:2])[0] if value and len(value) >= 2 else 0


def encode_command(elements: list[tuple[int, bytes]]) -> bytes:
    """A command set from (element, value) pairs of group 0000, sorted, with its group length."""
    body = b"".join(_ELEM.pack(0, e, len(v)) + v for e, v in sorted(elements))
    return _ELEM.pack(0, 0, 4) + struct.pack("<L", len(body)) + body


def _ui(uid: str) -> bytes:
    raw = uid.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def response(command: int, message_id: int, sop_class: str, sop_instance: str | None, status: int) -> bytes:
    elements = [(2, _ui(sop_class)), (0x100, struct.pack("<H", command)), (0x120, struct.pack("<H", message_id)),
                (0x800, struct.pack("<H", 0x0101)), (0x900, struct.pack("<H", status))]
    if sop_instance is not None:
        elements.append((0x1000, _ui(sop_instance)))
    return encode_command(elements)


def p_data(context_id: int, command: bytes) -> bytes:
    pdv = struct.pack(">LBB", len(command) + 2, context_id, 0x03) + command
    return _PDU_HEAD.pack(4, 0, len(pdv)) + pdv


class Store:
    """What the association hands each object to: the storage and the study bookkeeping.

    ``begin()`` returns an open incoming object; its ``write()`` takes data set
    fragments, ``finish()`` returns the C-STORE status, ``discard()`` drops it.
    Implemented in plugins/storescp.py (``StudyStore``).
    """

    def begin(self, assoc: "Association", sop_class: str, sop_instance: str, syntax: str):
        raise NotImplementedError


class Association(threading.Thread):
    """One association with one sender, in its own thread."""

    def __init__(self, server: "Server", conn: socket.socket, peer: tuple):
        super().__init__(daemon=True, name=f"assoc-{peer[0]}:{peer[1]}")
        self.server, self.conn, self.peer = server, conn, peer
        self.calling = "?"
        self.contexts: dict[int, tuple[str, str]] = {}  # id -> (abstract syntax, transfer syntax)
        self.stored = self.failed = 0
        self.incoming = None
        self.rfile = None
        self.view = memoryview(bytearray(1 << 20))  # reused for every fragment: no allocation per read

    # -- socket helpers --

    def _read_exact(self, n: int) -> bytes:
        data = self.rfile.read(n)
        if len(data) != n:
            raise ConnectionError("the peer closed the connection")
        return data

    def send(self, data: bytes) -> None:
        self.conn.sendall(data)

    # -- the association --

    def run(self):
        server = self.server
        if server.ssl_context is not None:  # the handshake in this thread: a slow caller delays no other
            try:
                self.conn.settimeout(30)
                self.conn = server.ssl_context.wrap_socket(self.conn, server_side=True)
            except (OSError, ValueError) as exc:
                log.warning("%s: TLS handshake failed: %s", self.peer[0], exc)
                self.conn.close()
                server.finished(self)
                return
        try:
            self.conn.settimeout(server.policy.idle_timeout)
            self.rfile = self.conn.makefile("rb", buffering=1 << 18)
            if not self.associate():
                return
            self.serve()
        except TimeoutError:
            self.abort()
            log.warning("%s: association aborted: nothing received for %g s", self.label(), server.policy.idle_timeout)
        except (OSError, ConnectionError, ValueError, struct.error) as exc:
            if not server.stopping.is_set():
                log.warning("%s: association ended: %s", self.label(), exc)
        except Exception as exc:  # never take the server down
            self.abort()
            log.error("%s: association failed: %s: %s", self.label(), type(exc).__name__, exc,
                      exc_info=log.isEnabledFor(logging.DEBUG))
        finally:
            if self.incoming is not None:
                self.incoming.discard()
                self.incoming = None
            try:  # the file object holds a reference: close both, or the peer waits for our FIN
                if self.rfile is not None:
                    self.rfile.close()
                self.conn.close()
            except OSError:
                pass
            server.finished(self)

    def label(self) -> str:
        return f"{self.calling}@{self.peer[0]}"

    def associate(self) -> bool:
        from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ

        kind, _, length = _PDU_HEAD.unpack(self._read_exact(6))
        if kind != 1:
            raise ValueError(f"expected A-ASSOCIATE-RQ, got PDU type {kind}")
        if length > 1 << 20:
            raise ValueError("A-ASSOCIATE-RQ too long")
        raw = struct.pack(">BBL", kind, 0, length) + self._read_exact(length)
        rq = A_ASSOCIATE_RQ()
        rq.decode(raw)
        primitive = rq.to_primitive()
        called = primitive.called_ae_title.strip()
        self.calling = primitive.calling_ae_title.strip()
        try:
            self.server.policy.check(called, self.calling, self.peer[0])
            self.server.check_capacity()
        except Refused as refused:
            log.warning("%s: association refused: %s", self.label(), refused)
            primitive.result, primitive.result_source, primitive.diagnostic = (
                refused.result, refused.source, refused.reason)
            rj = A_ASSOCIATE_RJ()
            rj.from_primitive(primitive)
            self.send(rj.encode())
            return False
        from pynetdicom.pdu_primitives import (
            ImplementationClassUIDNotification,
            ImplementationVersionNameNotification,
            MaximumLengthNotification,
        )
        from pynetdicom.presentation import PresentationContext

        self.max_send = 0
        for item in primitive.user_information:
            if isinstance(item, MaximumLengthNotification):
                self.max_send = item.maximum_length_received
        results = []
        profile = self.server.policy.profile
        for cx in primitive.presentation_context_definition_list:
            out = PresentationContext()
            out.context_id = cx.context_id
            out.abstract_syntax = cx.abstract_syntax
            offered = [str(ts) for ts in cx.transfer_syntax]
            if not profile.accepts(str(cx.abstract_syntax)):
                out.result = 3  # abstract syntax not supported
                out.transfer_syntax = [offered[0] if offered else IMPLICIT_LE]
            elif not offered:
                out.result = 4
                out.transfer_syntax = [IMPLICIT_LE]
            else:
                chosen = profile.choose(offered)
                out.result = 0
                out.transfer_syntax = [chosen]
                self.contexts[cx.context_id] = (str(cx.abstract_syntax), chosen)
            results.append(out)
        max_length = MaximumLengthNotification()
        max_length.maximum_length_received = MAX_PDU
        impl = ImplementationClassUIDNotification()
        impl.implementation_class_uid = IMPLEMENTATION_UID
        version = ImplementationVersionNameNotification()
        version.implementation_version_name = IMPLEMENTATION_VERSION
        primitive.user_information = [max_length, impl, version]
        primitive.presentation_context_definition_results_list = results
        primitive.result = 0
        ac = A_ASSOCIATE_AC()
        ac.from_primitive(primitive)
        self.send(ac.encode())
        refused = len(results) - len(self.contexts)
        log.info("%s: association accepted (%d contexts, %d refused)", self.label(), len(self.contexts), refused)
        return True

    def serve(self) -> None:
        command = bytearray()
        message = None  # decoded command of the message whose data set is arriving
        while True:
            kind, _, length = _PDU_HEAD.unpack(self._read_exact(6))
            if kind == 4:  # P-DATA-TF
                left = length
                while left > 0:
                    pdv_length, context_id, control = _PDV_HEAD.unpack(self._read_exact(6))
                    left -= 4 + pdv_length
                    size = pdv_length - 2
                    if control & 1:  # a command fragment
                        command += self._read_exact(size)
                        if control & 2:
                            message = self.command(context_id, bytes(command))
                            command.clear()
                    else:
                        self.data(size, control & 2, message)
                        if control & 2:
                            message = None
            elif kind == 5:  # A-RELEASE-RQ
                self._read_exact(length)
                self.send(_PDU_HEAD.pack(6, 0, 4) + b"\0\0\0\0")
                log.info("%s: association released: %d stored, %d failed", self.label(), self.stored, self.failed)
                return
            elif kind == 7:  # A-ABORT
                self._read_exact(length)
                log.warning("%s: association aborted by the peer after %d stored", self.label(), self.stored)
                return
            else:
                raise ValueError(f"unexpected PDU type {kind}")

    def abort(self) -> None:
        try:
            self.send(_PDU_HEAD.pack(7, 0, 4) + b"\0\0\2\0")
        except OSError:
            pass

    def command(self, context_id: int, raw: bytes):
        elements = decode_command(raw)
        field_ = _us(elements.get(0x100))
        message_id = _us(elements.get(0x110))
        has_data = _us(elements.get(0x800)) != 0x0101
        if context_id not in self.contexts:
            raise ValueError(f"message on presentation context {context_id}, which was not accepted")
        abstract, syntax = self.contexts[context_id]
        if field_ == 0x0030:  # C-ECHO-RQ
            self.send(p_data(context_id, response(0x8030, message_id, VERIFICATION, None, SUCCESS)))
            log.info("%s: C-ECHO answered", self.label())
            return None
        if field_ != 0x0001 or not has_data:
            self.abort()
            raise ValueError(f"unsupported command 0x{field_:04x}")
        sop_class = _uid(elements.get(0x2)) or abstract
        sop_instance = _uid(elements.get(0x1000))
        self.incoming = self.server.store.begin(self, sop_class, sop_instance, syntax)
        return (context_id, message_id, sop_class, sop_instance)

    def data(self, size: int, last: int, message) -> None:
        incoming = self.incoming
        if message is None or incoming is None:
            raise ValueError("data set fragment without a C-STORE command")
        readinto, view = self.rfile.readinto, self.view
        while size > 0:
            got = readinto(view[:min(size, len(view))])
            if not got:
                raise ConnectionError("the peer closed the connection in the middle of a data set")
            size -= got
            incoming.write(view[:got])
        if last:
            self.incoming = None
            status = incoming.finish()
            context_id, message_id, sop_class, sop_instance = message
            if status == SUCCESS:
                self.stored += 1
            else:
                self.failed += 1
            self.send(p_data(context_id, response(0x8001, message_id, sop_class, sop_instance, status)))


class Server:
    """Listens on a port; one thread per association; TLS when given an SSL context."""

    def __init__(self, policy: Policy, store: Store, host: str = "", port: int = 104, ssl_context=None):
        self.policy, self.store, self.ssl_context = policy, store, ssl_context
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.active: set[Association] = set()
        self.listener = socket.create_server((host, port), reuse_port=False, backlog=64)
        self.port = self.listener.getsockname()[1]
        self.thread = None

    def check_capacity(self) -> None:
        with self.lock:
            if len(self.active) > self.policy.max_associations:
                raise Refused(f"more than {self.policy.max_associations} associations at once", 2, 3, 2)

    def finished(self, assoc: Association) -> None:
        with self.lock:
            self.active.discard(assoc)

    def serve_forever(self) -> None:
        self.listener.settimeout(0.5)
        while not self.stopping.is_set():
            try:
                conn, peer = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self.stopping.is_set():
                    break
                raise
            conn.settimeout(None)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            assoc = Association(self, conn, peer)
            with self.lock:
                self.active.add(assoc)
            assoc.start()

    def start(self) -> "Server":
        self.thread = threading.Thread(target=self.serve_forever, daemon=True, name="storescp-listener")
        self.thread.start()
        return self

    def stop(self, wait: float = 5.0) -> None:
        """Stop accepting; end open associations (their objects in transit are dropped)."""
        self.stopping.set()
        try:
            self.listener.close()
        except OSError:
            pass
        if self.thread is not None:
            self.thread.join(wait)
        with self.lock:
            active = list(self.active)
        deadline = time.monotonic() + wait
        for assoc in active:
            assoc.abort()
            try:
                assoc.conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for assoc in active:
            assoc.join(max(0.0, deadline - time.monotonic()))


def resolve_allow(entries: list[str]) -> list:
    """'AE' or 'AE@host' -> [(AE, None or {ip addresses})]; an unknown host is an error."""
    out = []
    for entry in entries:
        ae, _, host = entry.partition("@")
        if not ae or len(ae) > 16:
            raise ValueError(f"--allow {entry!r}: an AE title of 1 to 16 characters, then optionally @host")
        if not host:
            out.append((ae, None))
            continue
        try:
            ips = {info[4][0] for info in socket.getaddrinfo(host, None)}
        except OSError as exc:
            raise ValueError(f"--allow {entry!r}: cannot resolve host {host!r}: {exc}") from None
        out.append((ae, ips))
    return out


def ssl_context(cert: Path | None, key: Path | None, ca: Path | None):
    """A server TLS context; with a CA, callers must present a certificate it signed."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key) if key else None)
    if ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(str(ca))
    return ctx
