"""send_dicom: `dcmpipe send` / `dcmpipe echo` against real peers (DCMTK storescp, a pynetdicom SCP)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import run_cli

MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


# -- peers ---------------------------------------------------------------------


def dcmtk(name: str) -> str:
    """The DCMTK binary ``name``: pynetdicom installs Python apps of the same names, which come first on PATH."""
    for folder in [*os.environ.get("PATH", "").split(os.pathsep), "/usr/bin", "/usr/local/bin"]:
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            try:
                out = subprocess.run([str(candidate), "--version"], capture_output=True, text=True, timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                continue
            if "dcmtk" in (out.stdout + out.stderr).lower():
                return str(candidate)
    pytest.skip(f"DCMTK {name} is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc=None, timeout=10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the peer exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


class DcmtkStorescp:
    def __init__(self, folder: Path, *args: str):
        self.folder = folder
        self.port = free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [dcmtk("storescp"), "-od", str(folder), "+B", "+uf", "-aet", "STORESCP", *args, str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=dict(os.environ, TCP_NODELAY="1"))
        wait_listening(self.port, self.proc)

    def received(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if p.is_file())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def storescp(tmp_path):
    peer = DcmtkStorescp(tmp_path / "received")
    yield peer
    peer.stop()


class PickySCP:
    """A pynetdicom SCP that accepts only MR Image Storage (in the given transfer syntaxes)."""

    def __init__(self, syntaxes=None, aetitle="PICKY", require_called=False, also=(), max_pdu=None):
        from pynetdicom import AE, evt
        from pynetdicom.sop_class import Verification
        from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

        self.received = []
        self.associations = []  # the number of contexts proposed, per association
        ae = AE(ae_title=aetitle)
        ae.require_called_aet = require_called
        ae.add_supported_context(MR_STORAGE, syntaxes or [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        ae.add_supported_context(Verification)
        for sop_class in also:
            ae.add_supported_context(sop_class)
        if max_pdu is not None:
            ae.maximum_pdu_size = max_pdu
        self.port = free_port()

        def on_store(event):
            self.received.append((event.context.transfer_syntax, event.dataset))
            return 0x0000

        def on_established(event):
            self.associations.append(len(event.assoc.requestor.requested_contexts))

        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, on_store),
                                                    (evt.EVT_ESTABLISHED, on_established)])

    def stop(self):
        self.server.shutdown()


# -- data ------------------------------------------------------------------------


def _old(paths):
    for path in paths:
        os.utime(path, (1_000_000_000, 1_000_000_000))
    return paths


@pytest.fixture
def mr_files(tmp_path) -> list[Path]:
    from dcmpipe.demo import SeriesPlan, StudyPlan, generate

    return _old(generate(tmp_path / "mr", [StudyPlan("7", "SEND^TEST", "S1", "Brain", [SeriesPlan(3, "T1", slices=12)])]))


def pydicom_file(name: str) -> Path:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom's test file {name} is not available")
    return Path(path)


def dataset_bytes(path: Path) -> bytes:
    """The data set of a DICOM file, as bytes, after its File Meta (found by pynetdicom, not by us)."""
    from pynetdicom.dsutils import split_dataset

    _, offset = split_dataset(path)
    return path.read_bytes()[offset:]


def summary_counts(stderr: str) -> tuple[int, int]:
    match = re.search(r"send: (\d+) sent, (\d+) failed", stderr)
    assert match, stderr
    return int(match[1]), int(match[2])


# -- sending to DCMTK storescp -----------------------------------------------------


@pytest.mark.dcmtk
def test_files_arrive_at_dcmtk_storescp_with_byte_equal_data_sets(storescp, mr_files, tmp_path):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    # Several SOP classes and uncompressed transfer syntaxes; CT_small (39 kB) needs several PDUs.
    for name in ("CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "rtplan.dcm"):
        shutil.copy(pydicom_file(name), mixed / name)
    sources = [*mr_files, *_old(sorted(mixed.iterdir()))]
    result = run_cli("send", "-s", "127.0.0.1", "-p", storescp.port, "-r", "STORESCP", mr_files[0].parent, mixed)
    assert result.returncode == 0, result.stderr
    assert summary_counts(result.stderr) == (len(sources), 0)
    received = storescp.received()
    assert len(received) == len(sources)
    assert sorted(dataset_bytes(p) for p in received) == sorted(dataset_bytes(p) for p in sources)


@pytest.mark.dcmtk
def test_a_folder_sends_its_files_not_its_subfolders(storescp, mr_files):
    folder = mr_files[0].parent
    sub = folder / "sub"
    sub.mkdir()
    shutil.move(mr_files[-1], sub / mr_files[-1].name)
    result = run_cli("send", "-s", "127.0.0.1", "-p", storescp.port, folder)
    assert result.returncode == 0, result.stderr
    assert len(storescp.received()) == len(mr_files) - 1


@pytest.mark.dcmtk
def test_echo_against_dcmtk_storescp(storescp):
    result = run_cli("echo", "127.0.0.1", storescp.port)
    assert result.returncode == 0, result.stderr
    assert f"C-ECHO to ANY-SCP@127.0.0.1:{storescp.port}: ok" in result.stdout
    # send without files checks the link the same way
    result = run_cli("send", "-s", "127.0.0.1", "-p", storescp.port, "-r", "STORESCP")
    assert result.returncode == 0, result.stderr
    assert f"C-ECHO to STORESCP@127.0.0.1:{storescp.port}: ok" in result.stdout
    assert storescp.received() == []


@pytest.mark.dcmtk
def test_dcmtk_echoscu_agrees_the_peer_is_up(storescp):
    """The reference answer for the same peer: DCMTK's own echoscu."""
    out = subprocess.run([dcmtk("echoscu"), "127.0.0.1", str(storescp.port)], capture_output=True, text=True)
    assert out.returncode == 0
    assert run_cli("echo", "127.0.0.1", storescp.port).returncode == 0


@pytest.mark.dcmtk
def test_a_transfer_syntax_the_peer_refuses_is_reported_per_file(storescp, mr_files, tmp_path):
    # DCMTK storescp accepts only uncompressed transfer syntaxes unless told otherwise.
    extra = tmp_path / "j2k"
    extra.mkdir()
    shutil.copy(pydicom_file("MR_small_jp2klossless.dcm"), extra / "mr_j2k.dcm")
    _old([extra / "mr_j2k.dcm"])
    started = time.monotonic()
    result = run_cli("send", "-s", "127.0.0.1", "-p", storescp.port, "-r", "STORESCP", mr_files[0].parent,
                     extra / "mr_j2k.dcm")
    assert result.returncode == 1
    assert summary_counts(result.stderr) == (len(mr_files), 1)
    line = next(line for line in result.stderr.splitlines() if "mr_j2k.dcm:" in line and line.startswith("  "))
    assert "refused MR Image Storage" in line and "JPEG 2000" in line and "transfer syntax not supported" in line
    assert "attempt" not in line and time.monotonic() - started < 10  # a refusal is not retried
    assert len(storescp.received()) == len(mr_files)


def test_a_sop_class_the_peer_refuses_is_reported_per_file(mr_files, tmp_path):
    peer = PickySCP()
    try:
        ct = _old([shutil.copy(pydicom_file("CT_small.dcm"), tmp_path / "ct.dcm")])[0]
        result = run_cli("send", "-s", "127.0.0.1", "-p", peer.port, "-r", "PICKY", ct, *mr_files)
        assert result.returncode == 1
        assert summary_counts(result.stderr) == (len(mr_files), 1)
        assert re.search(r"ct\.dcm: .*refused CT Image Storage \(1\.2\.840\.10008\.5\.1\.4\.1\.1\.2\) in "
                         r"Explicit VR Little Endian: SOP class not supported by the peer", result.stderr)
        assert len(peer.received) == len(mr_files)
        # CT and MR are two studies: CT's (CT in explicit and implicit VR), then MR's (both kinds)
        assert peer.associations == [2, 4]
    finally:
        peer.stop()


def test_more_kinds_than_one_association_can_carry_take_two(tmp_path):
    """70 SOP classes in Explicit VR need 140 contexts: more than 128, so two associations."""
    from pydicom import dcmread
    from pydicom.uid import generate_uid
    from pynetdicom import AllStoragePresentationContexts

    classes = [cx.abstract_syntax for cx in AllStoragePresentationContexts][:70]
    ds = dcmread(pydicom_file("CT_small.dcm"))
    folder = tmp_path / "many"
    folder.mkdir()
    for n, sop_class in enumerate(classes):
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(folder / f"f{n:03d}.dcm", enforce_file_format=True)
    _old(folder.iterdir())
    peer = PickySCP(also=classes)
    try:
        result = run_cli("send", "-s", "127.0.0.1", "-p", peer.port, folder)
        assert result.returncode == 0, result.stderr
        assert summary_counts(result.stderr) == (70, 0)
        assert sorted(str(d.SOPClassUID) for _, d in peer.received) == sorted(classes)
        assert len(peer.associations) == 2 and max(peer.associations) == 128
    finally:
        peer.stop()


def test_a_peer_taking_only_implicit_vr_gets_a_converted_copy(mr_files):
    from pydicom import dcmread
    from pydicom.uid import ImplicitVRLittleEndian

    peer = PickySCP([ImplicitVRLittleEndian])
    try:
        result = run_cli("send", "-s", "127.0.0.1", "-p", peer.port, mr_files[0])
        assert result.returncode == 0, result.stderr
        ((syntax, ds),) = peer.received
        assert syntax == ImplicitVRLittleEndian
        original = dcmread(mr_files[0])
        assert ds.SOPInstanceUID == original.SOPInstanceUID
        assert ds.PixelData == original.PixelData and ds.PatientName == original.PatientName
    finally:
        peer.stop()


def test_a_down_peer_is_retried_with_a_growing_delay_then_listed(mr_files):
    port = free_port()  # nothing listens there
    files = mr_files[:3]
    started = time.monotonic()
    result = run_cli("send", "-s", "127.0.0.1", "-p", port, "-d", "0.3", *files)
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert summary_counts(result.stderr) == (0, 3)
    # first file: 0, 0.1, 0.2, 0.3 s before its four attempts; the delay then stays at the maximum
    delays = [float(d) for d in re.findall(r"after (\d\.\d) s", result.stderr)]
    assert delays[:3] == [0.1, 0.2, 0.3] and set(delays[3:]) == {0.3}
    assert elapsed >= 0.6 + 2 * 4 * 0.3 - 0.05
    listed = re.findall(r"^  (\S+): not sent after 4 attempts: cannot connect to 127\.0\.0\.1:\d+: Connection refused",
                        result.stderr, re.M)
    assert listed == [str(f) for f in files]


def test_an_association_the_peer_rejects_is_reported(mr_files):
    peer = PickySCP(aetitle="PICKY", require_called=True)
    try:
        result = run_cli("send", "-s", "127.0.0.1", "-p", peer.port, "-r", "WRONG", "-d", "0", "--retries", "1",
                         mr_files[0])
        assert result.returncode == 1
        assert "rejected the association permanently: called AE title not recognised" in result.stderr
        assert "not sent after 2 attempts" in result.stderr
        echo = run_cli("echo", "127.0.0.1", peer.port, "-r", "WRONG")
        assert echo.returncode == 1 and "called AE title not recognised" in echo.stderr
    finally:
        peer.stop()


def test_a_file_that_is_not_dicom_fails_and_is_listed(mr_files):
    text = mr_files[0].parent / "notes.txt"
    text.write_text("not DICOM\n")
    _old([text])
    peer = PickySCP()
    try:
        result = run_cli("send", "-s", "127.0.0.1", "-p", peer.port, mr_files[0].parent)
        assert result.returncode == 1
        assert summary_counts(result.stderr) == (len(mr_files), 0)
        assert "1 not DICOM (named above)" in result.stderr
        assert re.search(r"notes\.txt: not a DICOM file", result.stderr)
    finally:
        peer.stop()


# -- named destinations -------------------------------------------------------------


def _destinations(path: Path, port: int, **more) -> Path:
    extra = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in more.items())
    path.write_text(f'[destinations.lab]\nhost = "127.0.0.1"\nport = {port}\naetitle = "PICKY"\n{extra}'
                    f'\n[destinations.other]\nhost = "example.invalid"\nport = 104\n')
    return path


def test_send_and_echo_to_a_named_destination(mr_files, tmp_path):
    peer = PickySCP(require_called=True)
    try:
        config = _destinations(tmp_path / "dest.toml", peer.port)
        result = run_cli("send", "--config", config, "--to", "lab", *mr_files)
        assert result.returncode == 0, result.stderr
        assert f"to lab (PICKY@127.0.0.1:{peer.port})" in result.stderr
        assert len(peer.received) == len(mr_files)
        echo = run_cli("echo", "--config", config, "--to", "lab")
        assert echo.returncode == 0 and "ok" in echo.stdout
        # the default file in the user's config folder
        home = tmp_path / "xdg"
        (home / "dcmpipe").mkdir(parents=True)
        _destinations(home / "dcmpipe" / "destinations.toml", peer.port)
        echo = run_cli("echo", "--to", "lab", env={"XDG_CONFIG_HOME": str(home), "DCMPIPE_DESTINATIONS": ""})
        assert echo.returncode == 0, echo.stderr
    finally:
        peer.stop()


def test_unknown_destination_and_bad_file_are_refused_before_sending(mr_files, tmp_path):
    config = _destinations(tmp_path / "dest.toml", 104)
    result = run_cli("send", "--config", config, "--to", "nope", *mr_files)
    assert result.returncode == 2
    assert "no destination 'nope'" in result.stderr and "known: lab, other" in result.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('[destinations.x]\nhost = "h"\nprot = 104\n')
    result = run_cli("echo", "--config", bad, "--to", "x")
    assert result.returncode == 2
    assert "unknown key 'prot'" in result.stderr and "'port' is missing" in result.stderr
    assert "Traceback" not in result.stderr


def test_command_line_switches_override_the_destination(tmp_path):
    peer = PickySCP(aetitle="OTHERAE", require_called=True)
    try:
        config = _destinations(tmp_path / "dest.toml", peer.port)
        assert run_cli("echo", "--config", config, "--to", "lab").returncode == 1  # PICKY is refused
        echo = run_cli("echo", "--config", config, "--to", "lab", "-r", "OTHERAE")
        assert echo.returncode == 0, echo.stderr
    finally:
        peer.stop()


# -- copy-field ------------------------------------------------------------------------


def test_copy_field_changes_the_sent_copy_only(mr_files):
    from pydicom import dcmread

    path = mr_files[0]
    ds = dcmread(path)
    ds.CommentsOnThePerformedProcedureStep = "contrast given at 10:42"
    ds.save_as(path)
    _old([path])
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    peer = PickySCP()
    try:
        result = run_cli("send", "-s", "127.0.0.1", "-p", peer.port,
                         "--copy-field", "CommentsOnThePerformedProcedureStep=PatientComments", path, mr_files[1])
        assert result.returncode == 0, result.stderr
        got = {str(d.SOPInstanceUID): d for _, d in peer.received}
        assert got[str(ds.SOPInstanceUID)].PatientComments == "contrast given at 10:42"
        assert "PatientComments" not in got[str(dcmread(mr_files[1]).SOPInstanceUID)]  # no source: unchanged
    finally:
        peer.stop()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert "PatientComments" not in dcmread(path)


def test_copy_field_options_are_checked(mr_files):
    result = run_cli("send", "-s", "127.0.0.1", "-p", 104, "--copy-field", "NoSuchKeyword=PatientComments",
                     "--copy-field", "PatientComments", mr_files[0])
    assert result.returncode == 2
    assert "unknown DICOM keyword 'NoSuchKeyword'" in result.stderr and "'PatientComments' is not FROM=TO" in result.stderr


# -- recipes -------------------------------------------------------------------------


def test_print_recipe_and_dry_run(mr_files, tmp_path):
    result = run_cli("send", "-s", "pacs.lab", "-p", 104, "-r", "PACS", "--copy-field", "StudyID=AccessionNumber",
                     "--print-recipe", mr_files[0].parent)
    assert result.returncode == 0, result.stderr
    assert 'send = "send_dicom"' in result.stdout and 'transform = "copy-field"' in result.stdout
    recipe = tmp_path / "send.toml"
    recipe.write_text(result.stdout)
    assert run_cli("check", recipe).returncode == 0
    dry = run_cli("send", "-s", "pacs.lab", "-p", 104, "-r", "PACS", "--dry-run", mr_files[0])
    assert dry.returncode == 0, dry.stderr
    assert f"send_dicom: would send {mr_files[0]} to PACS@pacs.lab:104" in dry.stdout


def test_recipe_step_sends_the_run(mr_files, tmp_path):
    from dcmpipe.testing import run

    peer = PickySCP()
    try:
        summary = run({"step": [{"read": "files", "path": [str(mr_files[0].parent)], "settle": 0},
                                {"send": "send_dicom", "host": "127.0.0.1", "port": peer.port}]}, base_dir=tmp_path)
        assert summary.exit_code == 0 and summary.sent == len(mr_files)
        assert len(peer.received) == len(mr_files)
    finally:
        peer.stop()


def test_send_step_needs_a_destination(tmp_path):
    from dcmpipe import RecipeError
    from dcmpipe.testing import run

    with pytest.raises(RecipeError) as info:
        run({"step": [{"read": "files", "path": ["."]}, {"send": "send_dicom", "aetitle": "X" * 17}]},
            base_dir=tmp_path)
    assert any("give a 'destination', or 'host' and 'port'" in p for p in info.value.problems)


def test_a_large_file_crosses_many_small_pdus_intact(tmp_path):
    """2.3 MB of pixel data to a peer that takes PDUs of at most 4 kB: several 1 MiB blocks, ~600 PDUs."""
    from pydicom import dcmread

    ds = dcmread(pydicom_file("MR_small.dcm"))
    ds.Rows = ds.Columns = 1070
    ds.PixelData = os.urandom(1070 * 1070 * 2)
    path = tmp_path / "big.dcm"
    ds.save_as(path, enforce_file_format=True)
    _old([path])
    peer = PickySCP(max_pdu=4096)
    try:
        result = run_cli("send", "-s", "127.0.0.1", "-p", peer.port, path)
        assert result.returncode == 0, result.stderr
        ((_, got),) = peer.received
        assert got.PixelData == ds.PixelData
    finally:
        peer.stop()


def test_a_data_set_without_file_meta_is_sent_re_encoded(tmp_path):
    from pydicom import dcmread

    path = _old([shutil.copy(pydicom_file("ExplVR_LitEndNoMeta.dcm"), tmp_path / "no_meta.dcm")])[0]
    original = dcmread(path, force=True)
    peer = PickySCP(also=[original.SOPClassUID])
    try:
        result = run_cli("send", "-s", "127.0.0.1", "-p", peer.port, path)
        assert result.returncode == 0, result.stderr
        ((_, got),) = peer.received
        assert got.SOPInstanceUID == original.SOPInstanceUID
        assert got == original  # every element, re-encoded
    finally:
        peer.stop()


def test_a_group_sender_sees_its_whole_study_before_the_first_send(export, tmp_path):
    """The host hook send_dicom relies on: Step.start_group(items) before the per-item calls."""
    import types

    from dcmpipe import Sender, hookimpl
    from dcmpipe.testing import registered, run

    calls = []

    class Recorder(Sender):
        """Records the order of calls."""

        id = "recorder"
        group = "study"

        def start_group(self, items):
            calls.append(("start", len(items), items[0].get("StudyInstanceUID")))

        def send(self, item):
            calls.append(("send", item.get("StudyInstanceUID")))
            return "recorded"

    plugin = types.SimpleNamespace(dcmpipe_senders=hookimpl(lambda: [Recorder]))
    with registered(plugin):
        summary = run({"step": [{"read": "files", "path": [str(export)], "recursive": True, "settle": 0},
                                {"send": "recorder"}]}, base_dir=tmp_path, jobs=2)
    starts = [c for c in calls if c[0] == "start"]
    assert len(starts) == 2 and sum(c[1] for c in starts) == summary.sent
    for n, call in enumerate(calls):  # every send follows the start of its own study
        if call[0] == "send":
            last_start = next(c for c in reversed(calls[:n]) if c[0] == "start")
            assert last_start[2] == call[1]


# -- TLS ---------------------------------------------------------------------------------


@pytest.fixture
def certificates(tmp_path):
    """A lab CA, a server certificate and a client certificate it signed (openssl)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path / "pki"
    folder.mkdir()

    def ssl(*args):
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=dcmpipe test CA")
    for name in ("server", "client"):
        ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={name}")
        ssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2")
    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other.key", "-out", "other.pem", "-days", "2",
        "-subj", "/CN=another CA")
    return folder


@pytest.mark.dcmtk
def test_send_over_tls_to_dcmtk_storescp(certificates, mr_files, tmp_path):
    pki = certificates
    peer = DcmtkStorescp(tmp_path / "received", "+tls", str(pki / "server.key"), str(pki / "server.pem"),
                         "-pw", "+cf", str(pki / "ca.pem"))
    try:
        tls = ["--tls", "--tls-ca", pki / "ca.pem", "--tls-cert", pki / "client.pem", "--tls-key", pki / "client.key"]
        result = run_cli("send", "-s", "127.0.0.1", "-p", peer.port, *tls, *mr_files)
        assert result.returncode == 0, result.stderr
        assert sorted(dataset_bytes(p) for p in peer.received()) == sorted(dataset_bytes(p) for p in mr_files)
        echo = run_cli("echo", "127.0.0.1", peer.port, *tls)
        assert echo.returncode == 0, echo.stderr
        # a server certificate our CA did not sign is refused
        wrong = run_cli("echo", "127.0.0.1", peer.port, "--tls", "--tls-ca", pki / "other.pem",
                        "--tls-cert", pki / "client.pem", "--tls-key", pki / "client.key")
        assert wrong.returncode == 1 and "TLS handshake failed" in wrong.stderr
        assert "certificate verify failed" in wrong.stderr.lower()
        # in a destinations file, paths are relative to the file
        config = pki / "dest.toml"
        config.write_text(f'[destinations.secure]\nhost = "127.0.0.1"\nport = {peer.port}\ntls = true\n'
                          f'tls_ca = "ca.pem"\ntls_cert = "client.pem"\ntls_key = "client.key"\n')
        assert run_cli("echo", "--config", config, "--to", "secure").returncode == 0
    finally:
        peer.stop()


# -- the whole scanner link: our sender to our receiver ------------------------------------


def test_our_send_to_our_classic_storescp_reports_the_refused_enhanced_mr(mr_files, tmp_path):
    """dcmpipe storescp --profile classic refuses Enhanced MR: the sender names that file and sends the rest."""
    import sys

    from conftest import REPO

    enhanced = REPO / "tests" / "data" / "enhanced" / "T2_.dcm"
    if not enhanced.is_file():
        pytest.skip("no Enhanced MR test file (tests/data/enhanced/T2_.dcm)")
    port = free_port()
    store = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-m", "dcmpipe", "storescp", "--store", str(store), "--profile",
                             "classic", "--eostudy-timeout", "60", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_listening(port, proc, timeout=30)
        copy = _old([shutil.copy(enhanced, tmp_path / "enhanced.dcm")])[0]
        result = run_cli("send", "-s", "127.0.0.1", "-p", port, "-r", "STORESCP", copy, *mr_files)
        assert result.returncode == 1
        assert summary_counts(result.stderr) == (len(mr_files), 1), result.stderr
        assert re.search(r"^  \S*enhanced\.dcm: .*refused Enhanced MR Image Storage .*SOP class not supported",
                         result.stderr, re.M)
        stored = sorted(p for p in store.rglob("MR.*") if p.is_file())
        assert sorted(dataset_bytes(p) for p in stored) == sorted(dataset_bytes(p) for p in mr_files)
    finally:
        proc.terminate()
        proc.wait(10)


def test_an_item_held_in_memory_is_sent_as_its_bytes(mr_files, tmp_path, monkeypatch):
    """Items a network reader keeps in memory (item.data, no file) go out undecoded too."""
    from dcmpipe import Context, Item
    from dcmpipe.plugins import send_dicom
    from dcmpipe.plugins.send_dicom import SendDicom, SendDicomOptions

    def no_decoding(*args):
        raise AssertionError("the data set was decoded")

    monkeypatch.setattr(send_dicom, "_encode", no_decoding)
    peer = PickySCP()
    try:
        item = Item(data=mr_files[0].read_bytes(), extra={"label": "received object"})
        item.load_header(None)
        step = SendDicom(SendDicomOptions(host="127.0.0.1", port=peer.port), Context(base_dir=tmp_path))
        try:
            assert step.send(item).startswith("sent received object")
        finally:
            step.close()
        ((_, got),) = peer.received
        assert got.SOPInstanceUID == item.get("SOPInstanceUID")
    finally:
        peer.stop()
