"""send_dicom: send DICOM files to a DICOM peer (C-STORE), check a link (C-ECHO).

The send step ``send_dicom`` stores each item on a peer, keeping one
association open for the whole run.  It works per study: before the first
file of a study it knows the SOP class and transfer syntax of every file
(from the headers the host read) and proposes one presentation context per
(SOP class, transfer syntax), plus Implicit VR Little Endian for uncompressed
files.  A kind of file the open association lacks (a new study's, or beyond
the 128 contexts an association can carry) makes it release the association
and associate again with the kinds still to send first.  When the peer refuses a file's
SOP class or transfer syntax, that file fails with the peer's reason; it is
not retried.  Other failures (peer down, association rejected or aborted, a
failure status) are retried ``retries`` times; the delay before each send
starts at 0 and grows by 0.1 s after every error, up to ``max_delay``, as in
the lab's send_dicom script.

The data set bytes go out as they are in the file (nothing decoded), unless
the peer accepted only another uncompressed transfer syntax, or a
``copy-field`` transform asked for a change: then pydicom re-encodes the copy
that is sent.  The file on disk is never changed.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click

from dcmpipe import DcmpipeError, Sender, Transform, hookimpl, option

log = logging.getLogger("dcmpipe")

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
UNCOMPRESSED = frozenset({IMPLICIT_LE, EXPLICIT_LE, "1.2.840.10008.1.2.2"})
MAX_CONTEXTS = 128
LOCAL_AETITLE = "DCMPIPE"
REMOTE_AETITLE = "ANY-SCP"
STEP_PREFIX = "send 'send_dicom': "  # how the runner prefixes a step's failure


class SendError(DcmpipeError):
    """A file could not be sent; the message says why."""


class _Refused(SendError):
    """The peer refused the file's SOP class or transfer syntax: retrying cannot help."""


class _StoreFailed(Exception):
    """The peer answered the C-STORE with a failure status."""


@dataclass(frozen=True)
class SendDicomOptions:
    destination: str = option("", help="a named destination of the destinations file (instead of host and port)")
    config: Path | None = option(None, help="the destinations file (default ~/.config/dcmpipe/destinations.toml)")
    host: str = option("", help="the peer's host name or address")
    port: int = option(0, help="the peer's port")
    aetitle: str = option(REMOTE_AETITLE, help="the peer's (called) AE title")
    local_aetitle: str = option(LOCAL_AETITLE, help="our (calling) AE title")
    max_delay: float = option(0.5, help="the delay between sends grows by 0.1 s after each error up to this (s)")
    retries: int = option(3, help="how many times a failed file is sent again")
    timeout: float = option(30.0, help="seconds to wait for the peer's answers")
    tls: bool = option(False, help="use TLS; the peer's certificate is verified")
    tls_ca: Path | None = option(None, help="CA certificates (PEM) to verify the peer with (default: the system's)")
    tls_cert: Path | None = option(None, help="our certificate (PEM), for peers that require one")
    tls_key: Path | None = option(None, help="the private key of tls_cert (PEM; default: in tls_cert)")

    def __post_init__(self):
        from dcmpipe.plugins._send_dicom_config import resolve

        resolve(self)  # raises ValueError with the problem


class SendDicom(Sender):
    """C-STORE every file to a DICOM peer over one association, with retries (DCMTK storescu's job)."""

    id = "send_dicom"
    Options = SendDicomOptions
    group = "study"  # one process and one association for the run, whatever --jobs says
    tags = ("SOPClassUID", "SOPInstanceUID")

    def __init__(self, options, context):
        from dcmpipe.plugins._send_dicom_config import resolve

        super().__init__(options, context)
        self.target = resolve(options)
        self.delay = 0.0
        self.assoc = None
        self.kinds: dict[tuple, int] = {}  # (SOP class, transfer syntax) -> files of it still to send
        self.offered: dict[tuple, list[int]] = {}  # kind -> context ids in the current association
        self.tls = None  # the TLS context, made at the first association

    # -- the step --------------------------------------------------------------

    def describe(self, item) -> str:
        edits = item.extra.get("send_edits")
        note = f" (copying {', '.join(f'{a} to {b}' for a, b, *_ in edits)})" if edits else ""
        return f"send_dicom: would send {item} to {self.target}{note}"

    @staticmethod
    def _kind(item) -> tuple[str, str | None] | None:
        sop_class = item.header.sop_class_uid or item.get("SOPClassUID")
        return (str(sop_class), getattr(item.header, "transfer_syntax", None)) if sop_class else None

    def start_group(self, items) -> None:
        """Learn every kind of file of the study before associating."""
        for item in items:
            kind = None if item.extra.get("hold") else self._kind(item)
            if kind is not None:
                self.kinds[kind] = self.kinds.get(kind, 0) + 1

    def send(self, item) -> str:
        kind = self._kind(item)
        instance = item.get("SOPInstanceUID")
        if kind is None or not instance:
            raise SendError("not sent: no SOP Class UID or SOP Instance UID")
        if self.kinds.get(kind, 0) > 0:
            self.kinds[kind] -= 1
        from dcmpipe.plugins._send_dicom_net import PeerError

        sop_class, syntax = kind
        attempts = 1 + self.target.retries
        last = None
        for attempt in range(1, attempts + 1):
            if self.delay:
                time.sleep(self.delay)
            try:
                return self._send_once(item, str(sop_class), str(instance), syntax)
            except (PeerError, _StoreFailed, OSError) as exc:  # a refusal (_Refused) is final: not retried
                last = exc
                self.delay = min(self.target.max_delay, round(self.delay + 0.1, 6))
                if not isinstance(exc, _StoreFailed):  # the association may be half-way through a message
                    self._drop(abort=True)
                if attempt < attempts:
                    log.warning("%s: %s; sending again (%d of %d) after %.1f s", item, exc, attempt,
                                attempts - 1, self.delay)
        raise SendError(f"not sent after {attempts} attempt{'s' if attempts > 1 else ''}: {last}")

    def close(self) -> None:
        self._drop(abort=False)

    # -- associations ----------------------------------------------------------

    def _drop(self, abort: bool) -> None:
        if self.assoc is not None:
            assoc, self.assoc = self.assoc, None
            self.offered = {}
            assoc.abort() if abort else assoc.release()

    @staticmethod
    def _pairs(kind: tuple) -> list[tuple[str, str]]:
        """The (abstract syntax, transfer syntax) contexts proposed for one kind of file."""
        sop_class, syntax = kind
        if syntax is None:  # no File Meta: pydicom re-encodes it
            return [(sop_class, EXPLICIT_LE), (sop_class, IMPLICIT_LE)]
        pairs = [(sop_class, syntax)]
        if syntax in UNCOMPRESSED and syntax != IMPLICIT_LE:
            pairs.append((sop_class, IMPLICIT_LE))  # every SCP must take it; we convert then
        return pairs

    def _associate(self, current: tuple) -> None:
        from dcmpipe.plugins._send_dicom_net import Association

        pairs: dict[tuple[str, str], None] = dict.fromkeys(self._pairs(current))
        # Up to the limit: the kinds still to send, in order, then the others, the most recent first.
        waiting = [kind for kind, left in self.kinds.items() if left > 0]
        for kind in [*waiting, *reversed([k for k in self.kinds if k not in waiting])]:
            wanted = self._pairs(kind)
            if len(pairs) + sum(p not in pairs for p in wanted) > MAX_CONTEXTS:
                continue
            pairs.update(dict.fromkeys(wanted))
        contexts = [(abstract, [syntax]) for abstract, syntax in pairs]
        target = self.target
        if self.tls is None and target.tls:
            self.tls = target.tls_context()
        self.assoc = Association(target.host, target.port, target.aetitle, target.local_aetitle, contexts,
                                 timeout=target.timeout, tls=self.tls)
        ids = {pair: 2 * n + 1 for n, pair in enumerate(pairs)}
        self.offered = {kind: [ids[p] for p in self._pairs(kind)] for kind in self.kinds
                        if all(p in ids for p in self._pairs(kind))}
        log.debug("associated with %s: %d contexts proposed, %d accepted", target, len(contexts),
                  len(self.assoc.accepted))

    def _context(self, kind: tuple) -> tuple[int, str]:
        """The accepted context id and transfer syntax for a kind of file (associating if needed)."""
        self.kinds.setdefault(kind, 0)  # a kind not announced by start_group (a per-item run)
        if self.assoc is None or kind not in self.offered:
            self._drop(abort=False)  # a kind the association lacks: associate again with it added
            self._associate(kind)
        ids = self.offered[kind]
        for cid in ids:
            if cid in self.assoc.accepted:
                return cid, self.assoc.accepted[cid][1]
        raise _Refused(self._refusal(kind, [self.assoc.refused.get(cid, "refused") for cid in ids]))

    def _refusal(self, kind: tuple, reasons: list[str]) -> str:
        from pydicom.uid import UID

        sop_class, syntax = kind
        name = UID(sop_class).name
        syntax_name = UID(syntax).name if syntax else "any uncompressed transfer syntax (the file has no File Meta)"
        return (f"{self.target} refused {name} ({sop_class}) in {syntax_name}: " + "; ".join(dict.fromkeys(reasons)))

    # -- one attempt -----------------------------------------------------------

    def _send_once(self, item, sop_class: str, instance: str, syntax: str | None) -> str:
        kind = (sop_class, syntax)
        cid, accepted = self._context(kind)
        edits = item.extra.get("send_edits") or []
        status = None
        if (item.source is not None or item.data) and not edits and accepted == syntax:
            from dcmpipe.plugins._send_dicom_net import dataset_offset

            source = item.data_source()  # the file, or the bytes received from the network
            with open(source, "rb") if isinstance(source, (str, os.PathLike)) else source as f:
                offset = dataset_offset(f)
                if offset is not None:  # the bytes as they are in the file
                    length = f.seek(0, os.SEEK_END) - offset
                    f.seek(offset)
                    status = self.assoc.store(cid, sop_class, instance, f, length)
        if status is None:
            data = _encode(item, accepted, edits)
            status = self.assoc.store(cid, sop_class, instance, data, len(data))
        if status.ok:
            return f"sent {item} to {self.target}"
        if status.warning:
            log.warning("%s: %s answered with a warning: %s", item, self.target, status)
            return f"sent {item} to {self.target} ({status})"
        raise _StoreFailed(f"{self.target} answered {status}")


def _encode(item, syntax: str, edits: list) -> bytes:
    """The item's data set encoded in ``syntax``, with the ``copy-field`` edits applied (pydicom)."""
    from pydicom import dcmread
    from pydicom.dataelem import DataElement
    from pydicom.datadict import dictionary_VR
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset
    from pydicom.uid import UID

    ds = dcmread(item.data_source(), force=True)
    for source, target, src_tag, dst_tag in edits:
        if src_tag in ds:
            element = ds[src_tag]
            try:
                vr = dictionary_VR(dst_tag)
            except KeyError:
                vr = element.VR
            ds[dst_tag] = DataElement(dst_tag, vr, element.value)
        else:
            log.info("%s: %s absent, %s not set", item, source, target)
    uid = UID(syntax)
    if uid.is_deflated or (uid.is_compressed and syntax != str(ds.file_meta.get("TransferSyntaxUID", ""))):
        raise _Refused(f"cannot re-encode the data set in {uid.name}")
    buffer = DicomBytesIO()
    buffer.is_little_endian = uid.is_little_endian
    buffer.is_implicit_VR = uid.is_implicit_VR
    for tag in [tag for tag in ds.keys() if tag.group == 0x0002]:  # File Meta inside a raw data set
        del ds[tag]
    write_dataset(buffer, ds)
    return buffer.getvalue()


# -- copy-field --------------------------------------------------------------


def _parse_copy(entries: list[str]) -> list[tuple[str, str, int, int]]:
    from dcmpipe.steps import tag_of

    out, problems = [], []
    for entry in entries:
        source, sep, target = (part.strip() for part in entry.partition("="))
        if not sep or not source or not target:
            problems.append(f"{entry!r} is not FROM=TO")
            continue
        try:
            src_tag, dst_tag = tag_of(source), tag_of(target)
        except ValueError as exc:
            problems.append(f"{entry!r}: {exc}")
            continue
        if dst_tag >> 16 in (0x0002, 0x0000) or dst_tag in (0x00080016, 0x00080018, 0x7FE00010):
            problems.append(f"{entry!r}: {target} cannot be set")
            continue
        out.append((source, target, src_tag, dst_tag))
    if problems:
        raise ValueError("option 'fields': " + "; ".join(problems))
    return out


@dataclass(frozen=True)
class CopyFieldOptions:
    fields: list[str] = option(help="'FROM=TO' pairs of keywords or tags: the value of FROM is copied to TO")

    def __post_init__(self):
        if not self.fields:
            raise ValueError("option 'fields': give at least one FROM=TO")
        _parse_copy(self.fields)


class CopyField(Transform):
    """Copy one element's value to another in the copy that send_dicom sends (never in the file)."""

    id = "copy-field"
    Options = CopyFieldOptions

    def __init__(self, options, context):
        super().__init__(options, context)
        self.edits = _parse_copy(options.fields)

    def transform(self, item):
        item.extra["send_edits"] = [*item.extra.get("send_edits", ()), *self.edits]
        return item


@hookimpl
def dcmpipe_senders():
    return [SendDicom]


@hookimpl
def dcmpipe_transforms():
    return [CopyField]


# -- commands ----------------------------------------------------------------

SEND_HELP = """Send DICOM files to a DICOM peer (C-STORE), like the lab's send_dicom.

\b
FILES are files or folders; a folder sends the files in it (not its
subfolders).  One association carries the whole run; each file's SOP class
and transfer syntax are proposed as they appear.  A file that fails is sent
again up to 3 times; the delay between sends starts at 0 and grows by 0.1 s
after each error, up to MAX_DELAY.  At the end the count of files sent and
failed is printed, with the failed files and why, and the exit code is 1 if
any failed.  A file whose SOP class or transfer syntax the peer refuses fails
at once with the peer's reason.  Without FILES, a C-ECHO checks the link.

\b
Examples:
  dcmpipe send -s pacs.lab -p 104 -r PACS study1/          send a folder
  dcmpipe send --to scanner1 *.dcm                         a named destination
  dcmpipe send --to scanner1                               C-ECHO only
  dcmpipe send --to archive --copy-field CommentsOnThePerformedProcedureStep=PatientComments dir/
  dcmpipe send --to archive dir/ --print-recipe            the recipe behind it

\b
Named destinations live in ~/.config/dcmpipe/destinations.toml (or --config FILE):
  [destinations.scanner1]
  host = "10.0.0.5"
  port = 104
  aetitle = "SCANNER1"
"""


def _target_options(func):
    for decorator in reversed([
        click.option("-s", "host", default="", metavar="HOST", help="the peer's host"),
        click.option("-p", "port", type=click.IntRange(1, 65535), default=None, help="the peer's port"),
        click.option("-r", "remote_ae", default=None, metavar="AETITLE",
                     help=f"the peer's (called) AE title [default: {REMOTE_AETITLE}]"),
        click.option("-a", "local_ae", default=None, metavar="AETITLE",
                     help=f"our (calling) AE title [default: {LOCAL_AETITLE}]"),
        click.option("--to", "destination", default="", metavar="NAME", help="a named destination"),
        click.option("--config", type=click.Path(dir_okay=False), default=None,
                     help="the destinations file [default: ~/.config/dcmpipe/destinations.toml]"),
        click.option("--timeout", type=click.FloatRange(min=0.1), default=None,
                     help="seconds to wait for the peer's answers [default: 30]"),
        click.option("--tls", is_flag=True, default=None, help="use TLS (the peer's certificate is verified)"),
        click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="CA certificates (PEM) to verify the peer with [default: the system's]"),
        click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="our certificate (PEM), for peers that require one"),
        click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="the private key of --tls-cert (PEM)"),
    ]):
        func = decorator(func)
    return func


def _send_options(destination, config, host, port, remote_ae, local_ae, timeout, tls=None, tls_ca=None,
                  tls_cert=None, tls_key=None, **more) -> dict:
    """The send step's recipe keys from the command line (only what was given)."""
    step = {}
    if tls:
        step["tls"] = True
    for key, path in (("tls_ca", tls_ca), ("tls_cert", tls_cert), ("tls_key", tls_key)):
        if path:
            step[key] = str(Path(path).resolve())
    if destination:
        step["destination"] = destination
    if config:
        step["config"] = str(Path(config).resolve())
    if host:
        step["host"] = host
    if port is not None:
        step["port"] = port
    if remote_ae is not None:
        step["aetitle"] = remote_ae
    if local_ae is not None:
        step["local_aetitle"] = local_ae
    if timeout is not None:
        step["timeout"] = timeout
    step.update({k: v for k, v in more.items() if v is not None})
    return step


def _resolve_cli(step: dict):
    from dcmpipe.plugins._send_dicom_config import resolve

    values = dict(step)
    for key in ("config", "tls_ca", "tls_cert", "tls_key"):
        if key in values:
            values[key] = Path(values[key])
    try:
        return resolve(_options(values))
    except ValueError as exc:
        raise click.UsageError(str(exc).replace("option 'destination': ", "")) from None


def _options(values: dict) -> SendDicomOptions:
    """Options without the checks of __post_init__ (resolve() makes them)."""
    import dataclasses

    options = object.__new__(SendDicomOptions)
    for field in dataclasses.fields(SendDicomOptions):
        object.__setattr__(options, field.name, values.get(field.name, field.default))
    return options


def echo(target) -> float:
    """C-ECHO the target; return the round trip in seconds (PeerError if it fails)."""
    from dcmpipe.plugins._send_dicom_net import VERIFICATION, Association, PeerError

    started = time.perf_counter()
    assoc = Association(target.host, target.port, target.aetitle, target.local_aetitle,
                        [(VERIFICATION, [IMPLICIT_LE])], timeout=target.timeout, tls=target.tls_context())
    try:
        status = assoc.echo()
    except BaseException:
        assoc.abort()
        raise
    assoc.release()
    if not status.ok:
        raise PeerError(f"{target} answered the C-ECHO with {status}")
    return time.perf_counter() - started


def _echo_or_exit(target) -> None:
    from dcmpipe.plugins._send_dicom_net import PeerError

    try:
        seconds = echo(target)
    except PeerError as exc:
        click.echo(f"dcmpipe: echo failed: {exc}", err=True)
        sys.exit(1)
    click.echo(f"C-ECHO to {target}: ok ({seconds * 1000:.0f} ms)")


def send_recipe(files: list[str], step: dict, copy_fields: list[str]) -> dict:
    steps = [{"read": "files", "path": [str(Path(f)) for f in files], "recursive": False, "settle": 0.0}]
    if copy_fields:
        steps.append({"transform": "copy-field", "fields": list(copy_fields)})
    steps.append({"send": "send_dicom", **step})
    return {"recipe": {"name": "send"}, "step": steps}


@click.command("send", help=SEND_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("files", nargs=-1, type=click.Path(exists=True))
@_target_options
@click.option("-d", "max_delay", type=click.FloatRange(min=0), default=None,
              help="the longest delay between sends, in seconds [default: 0.5]")
@click.option("--retries", type=click.IntRange(0), default=None, help="sends again per failed file [default: 3]")
@click.option("--copy-field", "copy_fields", multiple=True, metavar="FROM=TO",
              help="copy the value of element FROM to TO in the sent copy (repeatable); the file is unchanged")
@click.option("-q", "quiet", is_flag=True, help="quiet: only errors and the summary")
@click.option("-v", "verbose", is_flag=True, help="say what happens to every file")
@click.option("--dry-run", is_flag=True, help="show what would be sent; send nothing")
@click.option("--print-recipe", is_flag=True, help="print the equivalent TOML recipe and exit")
@click.option("--debug", is_flag=True, help="show tracebacks")
def send_command(files, destination, config, host, port, remote_ae, local_ae, timeout, tls, tls_ca, tls_cert,
                 tls_key, max_delay, retries, copy_fields, quiet, verbose, dry_run, print_recipe, debug):
    from dcmpipe.cli import STATE, setup_logging

    step = _send_options(destination, config, host, port, remote_ae, local_ae, timeout, tls, tls_ca, tls_cert,
                         tls_key, max_delay=max_delay, retries=retries)
    if not files and not print_recipe:
        if copy_fields:
            raise click.UsageError("--copy-field needs FILES")
        _echo_or_exit(_resolve_cli(step))
        return
    data = send_recipe(list(files), step, list(copy_fields))
    if print_recipe:
        from dcmpipe.recipe import dump_recipe

        click.echo(dump_recipe(data), nl=False)
        return
    STATE["debug"] = STATE["debug"] or debug
    if quiet or verbose or debug:
        setup_logging(logging.DEBUG if debug else logging.INFO if verbose else logging.ERROR)
    target = _resolve_cli(step)
    from dcmpipe.recipe import build_recipe
    from dcmpipe.runner import run_recipe

    recipe = build_recipe(data, Path.cwd(), source="send")
    summary = run_recipe(recipe, dry_run=dry_run, jobs=1, debug=STATE["debug"])
    if dry_run:
        click.echo(f"send: {summary.line(True)}", err=True)
        sys.exit(summary.exit_code)
    total = summary.sent + summary.failed + summary.bad + summary.skipped
    rate = f", {summary.sent / summary.seconds:,.0f} files/s" if summary.seconds > 0 and summary.sent else ""
    line = (f"send: {summary.sent} sent, {summary.failed} failed"
            + (f", {summary.bad} not DICOM (named above)" if summary.bad else "")
            + (f", {summary.skipped} skipped" if summary.skipped else "")
            + f" (of {total}) to {target} in {summary.seconds:.1f} s{rate}")
    if not quiet or summary.exit_code:
        click.echo(line, err=True)
    if summary.failures:
        click.echo(f"not sent ({len(summary.failures)}{'+' if summary.failed > len(summary.failures) else ''}):",
                   err=True)
        for path, reason in summary.failures:
            click.echo(f"  {path}: {reason.removeprefix(STEP_PREFIX)}", err=True)
    if summary.exit_code:
        sys.exit(summary.exit_code)


ECHO_HELP = """Check a DICOM link with a C-ECHO (like DCMTK's echoscu).

\b
Examples:
  dcmpipe echo localhost 11112                    echoscu-style: HOST PORT
  dcmpipe echo -s pacs.lab -p 104 -r PACS
  dcmpipe echo --to scanner1                      a named destination
"""


@click.command("echo", help=ECHO_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("peer", required=False, metavar="[HOST")
@click.argument("peer_port", required=False, type=click.IntRange(1, 65535), metavar="PORT]")
@_target_options
def echo_command(peer, peer_port, destination, config, host, port, remote_ae, local_ae, timeout, tls, tls_ca,
                 tls_cert, tls_key):
    if peer and host:
        raise click.UsageError("give the host once (HOST or -s)")
    if peer_port and port:
        raise click.UsageError("give the port once (PORT or -p)")
    step = _send_options(destination, config, host or peer or "", port or peer_port, remote_ae, local_ae, timeout,
                         tls, tls_ca, tls_cert, tls_key)
    _echo_or_exit(_resolve_cli(step))


@hookimpl
def dcmpipe_register_commands(cli):
    cli.add_command(send_command)
    cli.add_command(echo_command)
