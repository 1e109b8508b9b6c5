"""A small synchronous DICOM storage client (SCU) for send_dicom: C-STORE and C-ECHO.

Why not pynetdicom's ``Association.send_c_store``: pynetdicom runs the upper
layer in two threads (a socket reader and a reactor that polls every
millisecond) and encodes every command set with pydicom, so each object costs
about 3 ms on loopback even with TCP_NODELAY (about 300 small files/s against
DCMTK storescp, which takes 1,250/s from DCMTK storescu).  A sender needs only
the client half of the protocol, in order, one message at a time; here it is
done on one blocking socket:

* A-ASSOCIATE-RQ with the presentation contexts the caller asks for, and
  A-ASSOCIATE-AC/-RJ read back (which contexts the peer accepted, with which
  transfer syntax, and why it refused the others);
* C-STORE-RQ: a command set of a few implicit-VR elements, then the data set
  bytes as they are in the file, cut into P-DATA-TF PDUs no larger than the
  peer accepts (nothing is decoded);
* C-ECHO-RQ; A-RELEASE; A-ABORT.

TCP_NODELAY is set on the socket before the first byte is sent (with Nagle's
algorithm on, every small object waits for a delayed ACK: ~11 objects/s).
PS3.8 (upper layer) and PS3.7 (DIMSE) are the references.
"""

from __future__ import annotations

import os
import socket
import struct

# A UID of the 2.25 (UUID) arc: no registered root needed.
IMPLEMENTATION_UID = b"2.25.87690400936567228935135931417292231100"
IMPLEMENTATION_VERSION = b"DCMPIPE_SEND"
APPLICATION_CONTEXT = b"1.2.840.10008.3.1.1.1"
VERIFICATION = "1.2.840.10008.1.1"
MAX_PDU_RECEIVED = 65536  # what we tell the peer we accept

_PDU_HEAD = struct.Struct(">BBL")
_ITEM_HEAD = struct.Struct(">BBH")
_PDV_HEAD = struct.Struct(">LBB")
_ELEMENT = struct.Struct("<HHL")

CONTEXT_RESULTS = {
    0: "accepted",
    1: "refused by the peer (user rejection)",
    2: "refused by the peer (no reason given)",
    3: "SOP class not supported by the peer",
    4: "transfer syntax not supported by the peer",
}
_RJ_REASONS = {
    (1, 1): "no reason given", (1, 2): "application context not supported",
    (1, 3): "calling AE title not recognised", (1, 7): "called AE title not recognised",
    (2, 1): "no reason given (ACSE)", (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion", (3, 2): "local limit exceeded",
}
_ABORT_REASONS = {0: "no reason given", 1: "unrecognised PDU", 2: "unexpected PDU",
                  4: "unrecognised PDU parameter", 5: "unexpected PDU parameter", 6: "invalid PDU parameter"}


class PeerError(Exception):
    """The peer could not be reached, refused the association or broke it off (worth a retry)."""


class DimseStatus:
    """The status of a C-STORE or C-ECHO response."""

    def __init__(self, code: int, comment: str = ""):
        self.code, self.comment = code, comment

    @property
    def ok(self) -> bool:
        return self.code == 0x0000

    @property
    def warning(self) -> bool:
        return self.code in (0x0001, 0x0107, 0x0116) or 0xB000 <= self.code <= 0xBFFF

    def __str__(self) -> str:
        text = f"status 0x{self.code:04X}"
        if 0xA700 <= self.code <= 0xA7FF:
            text += " (out of resources)"
        elif 0xA900 <= self.code <= 0xA9FF:
            text += " (data set does not match SOP class)"
        elif 0xC000 <= self.code <= 0xCFFF:
            text += " (cannot understand)"
        elif self.code == 0x0122:
            text += " (SOP class not supported)"
        elif self.warning:
            text += " (warning)"
        return text + (f": {self.comment}" if self.comment else "")


def _item(kind: int, payload: bytes) -> bytes:
    return _ITEM_HEAD.pack(kind, 0, len(payload)) + payload


def _ae(title: str) -> bytes:
    raw = title.encode("ascii")
    if not raw.strip() or len(raw) > 16:
        raise ValueError(f"AE title {title!r} must be 1 to 16 characters")
    return raw.ljust(16)


def _element(tag: int, value: bytes) -> bytes:
    return _ELEMENT.pack(tag >> 16, tag & 0xFFFF, len(value)) + value


def _uid(text: str) -> bytes:
    raw = text.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def command_set(fields: list[tuple[int, bytes]]) -> bytes:
    """An implicit VR little endian command set with its group length."""
    body = b"".join(_element(tag, value) for tag, value in fields)
    return _element(0x00000000, struct.pack("<L", len(body))) + body


def parse_command(data: bytes) -> dict[int, bytes]:
    """The elements of an implicit VR little endian command set, by tag."""
    out, pos, end = {}, 0, len(data)
    while pos + 8 <= end:
        group, elem, length = _ELEMENT.unpack_from(data, pos)
        pos += 8
        out[(group << 16) | elem] = data[pos:pos + length]
        pos += length
    return out


class Association:
    """One association as requestor: ``contexts`` is a list of (abstract syntax, [transfer syntaxes])."""

    def __init__(self, host: str, port: int, called: str, calling: str, contexts, *, timeout: float = 30.0,
                 connect_timeout: float = 10.0, tls=None):
        if not contexts or len(contexts) > 128:
            raise ValueError("an association carries 1 to 128 presentation contexts")
        self.peer = f"{called}@{host}:{port}"
        self.proposed = {2 * n + 1: (abstract, list(syntaxes)) for n, (abstract, syntaxes) in enumerate(contexts)}
        self.accepted: dict[int, tuple[str, str]] = {}  # context id -> (abstract syntax, transfer syntax)
        self.refused: dict[int, str] = {}  # context id -> why
        self.peer_max_pdu = 0
        self._message_id = 0
        self._buffer = bytearray()
        try:
            self.sock = socket.create_connection((host, port), timeout=connect_timeout)
        except OSError as exc:
            raise PeerError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls is not None:
                self.sock = _wrap(tls, self.sock, host, self.peer)
            self.sock.settimeout(timeout)
            self._request(called, calling)
        except BaseException:
            self.sock.close()
            raise

    # -- association -----------------------------------------------------------

    def _request(self, called: str, calling: str) -> None:
        items = [_item(0x10, APPLICATION_CONTEXT)]
        for cid, (abstract, syntaxes) in self.proposed.items():
            sub = _item(0x30, abstract.encode("ascii")) + b"".join(_item(0x40, ts.encode("ascii")) for ts in syntaxes)
            items.append(_item(0x20, bytes((cid, 0, 0, 0)) + sub))
        items.append(_item(0x50, _item(0x51, struct.pack(">L", MAX_PDU_RECEIVED)) + _item(0x52, IMPLEMENTATION_UID)
                           + _item(0x55, IMPLEMENTATION_VERSION)))
        body = struct.pack(">HH", 1, 0) + _ae(called) + _ae(calling) + bytes(32) + b"".join(items)
        self._send(_PDU_HEAD.pack(0x01, 0, len(body)) + body)
        kind, body = self._read_pdu()
        if kind == 0x03:
            result, source, reason = body[1], body[2], body[3]
            what = "permanently" if result == 1 else "for now"
            raise PeerError(f"{self.peer} rejected the association {what}: "
                            f"{_RJ_REASONS.get((source, reason), f'source {source}, reason {reason}')}")
        if kind != 0x02:
            raise PeerError(f"{self.peer} answered the association request with PDU type {kind}")
        self._read_accept(body)

    def _read_accept(self, body: bytes) -> None:
        pos = 68
        while pos + 4 <= len(body):
            kind, _, length = _ITEM_HEAD.unpack_from(body, pos)
            value = body[pos + 4:pos + 4 + length]
            pos += 4 + length
            if kind == 0x21:
                cid, result = value[0], value[2]
                syntax = ""
                sub = 4
                while sub + 4 <= len(value):
                    skind, _, slen = _ITEM_HEAD.unpack_from(value, sub)
                    if skind == 0x40:
                        syntax = value[sub + 4:sub + 4 + slen].rstrip(b"\0 ").decode("ascii")
                    sub += 4 + slen
                if cid not in self.proposed:
                    continue
                if result == 0 and syntax:
                    self.accepted[cid] = (self.proposed[cid][0], syntax)
                else:
                    self.refused[cid] = CONTEXT_RESULTS.get(result, f"refused (result {result})")
            elif kind == 0x50:
                sub = 0
                while sub + 4 <= len(value):
                    skind, _, slen = _ITEM_HEAD.unpack_from(value, sub)
                    if skind == 0x51 and slen == 4:
                        self.peer_max_pdu = struct.unpack_from(">L", value, sub + 4)[0]
                    sub += 4 + slen
        for cid in self.proposed:
            if cid not in self.accepted and cid not in self.refused:
                self.refused[cid] = "not answered by the peer"

    def release(self) -> None:
        """Release the association politely and close the socket."""
        try:
            self._send(_PDU_HEAD.pack(0x05, 0, 4) + bytes(4))
            while True:
                kind, _ = self._read_pdu()
                if kind in (0x06, 0x07):
                    break
        except (PeerError, OSError):
            pass
        finally:
            self.close()

    def abort(self) -> None:
        try:
            self._send(_PDU_HEAD.pack(0x07, 0, 4) + bytes(4))
        except (PeerError, OSError):
            pass
        self.close()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    # -- messages --------------------------------------------------------------

    def echo(self) -> DimseStatus:
        cid = next((c for c, (abstract, _) in self.accepted.items() if abstract == VERIFICATION), None)
        if cid is None:
            raise PeerError(f"{self.peer} refused the Verification SOP class (C-ECHO)")
        self._message_id += 1
        command = command_set([(0x00000002, _uid(VERIFICATION)), (0x00000100, struct.pack("<H", 0x0030)),
                               (0x00000110, struct.pack("<H", self._message_id)),
                               (0x00000800, struct.pack("<H", 0x0101))])
        self._send_pdvs(cid, command, True)
        return self._response(0x8030)

    def store(self, cid: int, sop_class: str, sop_instance: str, data, length: int) -> DimseStatus:
        """C-STORE one data set: ``data`` is bytes, or a binary file positioned at the data set."""
        self._message_id = self._message_id % 0xFFFF + 1
        command = command_set([(0x00000002, _uid(sop_class)), (0x00000100, struct.pack("<H", 0x0001)),
                               (0x00000110, struct.pack("<H", self._message_id)),
                               (0x00000700, struct.pack("<H", 0)), (0x00000800, struct.pack("<H", 0x0000)),
                               (0x00001000, _uid(sop_instance))])
        size = self._fragment_size()
        if length <= size and len(command) <= size:
            # The usual small object: command and data set leave in one write (one TCP segment).
            if not isinstance(data, (bytes, bytearray, memoryview)):
                data = data.read(length)
                if len(data) < length:
                    raise OSError(f"the file ended {length - len(data)} bytes early (changed while sending?)")
            self._send(self._pdu(cid, 0x03, command) + self._pdu(cid, 0x02, data))
        else:
            self._send_pdvs(cid, command, True)
            self._send_data(cid, data, length)
        return self._response(0x8001)

    @staticmethod
    def _pdu(cid: int, control: int, chunk) -> bytes:
        return _PDU_HEAD.pack(0x04, 0, len(chunk) + 6) + _PDV_HEAD.pack(len(chunk) + 2, cid, control) + chunk

    def _fragment_size(self) -> int:
        limit = self.peer_max_pdu if self.peer_max_pdu else 1 << 20
        return max(min(limit, 1 << 20) - 6, 256)

    def _send_pdvs(self, cid: int, payload: bytes, is_command: bool) -> None:
        size = self._fragment_size()
        view = memoryview(payload)
        for start in range(0, max(len(payload), 1), size):
            chunk = view[start:start + size]
            last = start + size >= len(payload)
            header = (2 if last else 0) | (1 if is_command else 0)
            self._send_fragment(cid, header, chunk)

    def _send_fragment(self, cid: int, control: int, chunk) -> None:
        head = _PDU_HEAD.pack(0x04, 0, len(chunk) + 6) + _PDV_HEAD.pack(len(chunk) + 2, cid, control)
        try:
            if len(chunk) < 4096:
                self.sock.sendall(head + bytes(chunk))
            else:
                self.sock.sendall(head)
                self.sock.sendall(chunk)
        except OSError as exc:
            raise PeerError(f"{self.peer}: connection lost while sending: {exc.strerror or exc}") from None

    def _send_data(self, cid: int, data, length: int) -> None:
        if isinstance(data, (bytes, bytearray, memoryview)):
            self._send_pdvs(cid, bytes(data), False)
            return
        # Read blocks of about 1 MiB and send each block's PDUs with one sendmsg() call.
        size = self._fragment_size()
        per_block = max(1, min(256, (1 << 20) // size))  # at most 512 buffers per sendmsg (IOV_MAX 1024)
        buffer = bytearray(min(size * per_block, max(length, 1)))
        view = memoryview(buffer)
        sent = 0
        while sent < length:
            want = min(len(buffer), length - sent)
            got = data.readinto(view[:want])
            if got < want:
                raise OSError(f"the file ended {length - sent - got} bytes early (changed while sending?)")
            parts = []
            for start in range(0, got, size):
                chunk = view[start:min(start + size, got)]
                last = sent + start + len(chunk) >= length
                parts.append(_PDU_HEAD.pack(0x04, 0, len(chunk) + 6)
                             + _PDV_HEAD.pack(len(chunk) + 2, cid, 0x02 if last else 0x00))
                parts.append(chunk)
            self._send_parts(parts)
            sent += got

    def _send_parts(self, parts: list) -> None:
        """sendall() for a list of buffers, in as few system calls as the kernel allows."""
        try:
            while parts:
                done = self.sock.sendmsg(parts)
                while parts and done >= len(parts[0]):
                    done -= len(parts[0])
                    parts.pop(0)
                if done:
                    parts[0] = memoryview(parts[0])[done:]
        except OSError as exc:
            raise PeerError(f"{self.peer}: connection lost while sending: {exc.strerror or exc}") from None

    def _response(self, expected: int) -> DimseStatus:
        command = bytearray()
        while True:
            kind, body = self._read_pdu()
            if kind == 0x07:
                source, reason = body[2], body[3]
                raise PeerError(f"{self.peer} aborted the association ({_ABORT_REASONS.get(reason, reason)}, "
                                f"source {source})")
            if kind == 0x05:  # the peer wants to release: answer and stop
                self._send(_PDU_HEAD.pack(0x06, 0, 4) + bytes(4))
                raise PeerError(f"{self.peer} released the association before answering")
            if kind != 0x04:
                raise PeerError(f"{self.peer} sent an unexpected PDU (type {kind}) instead of a response")
            pos, done = 0, False
            while pos + 6 <= len(body):
                length, _, control = _PDV_HEAD.unpack_from(body, pos)
                fragment = body[pos + 6:pos + 4 + length]
                pos += 4 + length
                if control & 1:
                    command += fragment
                    done = done or bool(control & 2)
            if done:
                break
        fields = parse_command(bytes(command))
        field = fields.get(0x00000100, b"")
        if len(field) != 2 or struct.unpack("<H", field)[0] != expected:
            raise PeerError(f"{self.peer} sent an unexpected message (command 0x{field.hex()})")
        status = fields.get(0x00000900, b"")
        if len(status) != 2:
            raise PeerError(f"{self.peer} sent a response without a status")
        comment = fields.get(0x00000902, b"").rstrip(b"\0 ").decode("latin-1")
        return DimseStatus(struct.unpack("<H", status)[0], comment)

    # -- the socket ------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        if self.sock is None:
            raise PeerError(f"{self.peer}: the association is closed")
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise PeerError(f"{self.peer}: connection lost: {exc.strerror or exc}") from None

    def _read_exact(self, count: int) -> bytes:
        buffer = self._buffer
        while len(buffer) < count:
            try:
                chunk = self.sock.recv(max(65536, count - len(buffer)))
            except socket.timeout:
                raise PeerError(f"{self.peer} did not answer in time") from None
            except OSError as exc:
                raise PeerError(f"{self.peer}: connection lost: {exc.strerror or exc}") from None
            if not chunk:
                raise PeerError(f"{self.peer} closed the connection")
            buffer += chunk
        out = bytes(buffer[:count])
        del buffer[:count]
        return out

    def _read_pdu(self) -> tuple[int, bytes]:
        if self.sock is None:
            raise PeerError(f"{self.peer}: the association is closed")
        kind, _, length = _PDU_HEAD.unpack(self._read_exact(6))
        return kind, self._read_exact(length)


def tls_context(ca: str | None, cert: str | None, key: str | None):
    """A client TLS context: the peer's certificate verified against ``ca`` (else the system's CAs),
    ``cert``/``key`` our own for peers that ask for one.  Host names are not checked: DICOM
    peers are often addressed by IP, and the CA is the lab's own (DCMTK does the same)."""
    import ssl

    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    if cert:
        context.load_cert_chain(cert, key)
    return context


def _wrap(context, sock, host: str, peer: str):
    import ssl

    try:
        return context.wrap_socket(sock, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        raise PeerError(f"{peer}: TLS handshake failed: certificate verify failed ({exc.verify_message})") from None
    except ssl.SSLError as exc:
        raise PeerError(f"{peer}: TLS handshake failed: {exc.reason or exc}") from None
    except OSError as exc:
        raise PeerError(f"{peer}: TLS handshake failed: {exc.strerror or exc}") from None


def dataset_offset(f) -> int | None:
    """Where the data set starts in an open DICOM file (after the File Meta), or None without one."""
    f.seek(0)
    data = f.read(132)
    if len(data) < 132 or data[128:132] != b"DICM":
        return None
    pos = 132
    while True:
        f.seek(pos)
        raw = f.read(12)
        if len(raw) < 8:
            return None
        group = struct.unpack_from("<H", raw)[0]
        if group != 0x0002:
            return pos
        vr = raw[4:6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV"):
            if len(raw) < 12:
                return None
            length = struct.unpack_from("<L", raw, 8)[0]
            if length == 0xFFFFFFFF:
                return None
            pos += 12 + length
        else:
            pos += 8 + struct.unpack_from("<H", raw, 6)[0]
