"""storescp: DCMTK storescu/echoscu -> our receiver; routing by Study Description; retention."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from _storescp_helpers import (
    EMRI, MR_STORAGE, RAW_STORAGE, Server, copy_with, dataset_bytes, dcmtk, make_study, need, start_half_sender,
    stored_files, storescu, wait_until,
)
from dcmpipe import Context, Item, Skip

DCMTK = pytest.mark.dcmtk


def _parts(store: Path) -> list[Path]:
    return [p for p in Path(store).rglob("*") if p.name.endswith(".dcmpipe-part")]


@pytest.fixture
def server(tmp_path):
    started = []

    def start(*options, store=None):
        srv = Server(store or tmp_path / "store", *options)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    """Classic MR files of one study, an Enhanced MR, a Raw Data object and a CT, all real files."""
    from pydicom.data import get_testdata_file

    folder = tmp_path_factory.mktemp("mixed")
    make_study(folder, "Brain", n=3)
    shutil.copy(EMRI, folder / "emri.dcm")
    copy_with(Path(get_testdata_file("MR_small.dcm")), folder / "raw.dcm", SOPClassUID=RAW_STORAGE)
    shutil.copy(get_testdata_file("CT_small.dcm"), folder / "ct.dcm")
    return folder


# -- DCMTK storescu -> our storescp ----------------------------------------------------------


@DCMTK
def test_storescu_to_enhanced_profile_names_files_like_dcmtk_storescp(server, mixed, tmp_path):
    from pydicom import dcmread

    srv = server("--eostudy-timeout", "60")
    result = storescu(srv.port, mixed)
    assert result.returncode == 0, result.stderr
    ours = stored_files(srv.store)
    assert len(ours) == 6
    # The same file names as DCMTK's own storescp gives the same objects.
    theirs_dir = tmp_path / "dcmtk"
    theirs_dir.mkdir()
    port = srv.port + 1 if srv.port < 65000 else 40123
    proc = subprocess.Popen([need("storescp"), "-B", "-od", str(theirs_dir), str(port)],  # -B: bit-preserving
                            env={**os.environ, "TCP_NODELAY": "1"}, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        assert storescu(port, mixed).returncode == 0
    finally:
        proc.terminate()
        proc.wait()
    assert sorted(p.name for p in ours) == sorted(p.name for p in theirs_dir.iterdir())
    prefixes = sorted(p.name.split(".")[0] for p in ours)
    assert prefixes == ["CT", "MR", "MR", "MR", "MRe", "RAW"]
    # Each object sits in its study's folder, its data set byte for byte as DCMTK's
    # bit-preserving storescp received it, in the transfer syntax of the original file.
    originals = {dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in mixed.iterdir()}
    for path in ours:
        ds = dcmread(path, stop_before_pixels=True)
        assert path.parent.name == ds.StudyInstanceUID
        original = originals[ds.SOPInstanceUID]
        assert ds.file_meta.TransferSyntaxUID == dcmread(original, stop_before_pixels=True).file_meta.TransferSyntaxUID
        assert dataset_bytes(path) == dataset_bytes(theirs_dir / path.name), path.name
        assert dcmread(path).PixelData == dcmread(original).PixelData
    assert not _parts(srv.store)


@DCMTK
def test_classic_profile_refuses_enhanced_mr_and_keeps_classic(server, mixed):
    srv = server("--profile", "classic")
    result = storescu(srv.port, mixed / "emri.dcm")
    assert result.returncode != 0
    assert not stored_files(srv.store)
    assert storescu(srv.port, *sorted(mixed.glob("S1_*"))).returncode == 0
    names = [p.name.split(".")[0] for p in stored_files(srv.store)]
    assert names == ["MR", "MR", "MR"]
    assert storescu(srv.port, mixed / "raw.dcm").returncode == 0  # Raw Data is not an Enhanced class


@DCMTK
def test_echoscu_is_answered(server):
    srv = server("-v")
    result = subprocess.run([need("echoscu"), "-aec", "STORESCP", "127.0.0.1", str(srv.port)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    srv.wait_for("C-ECHO answered")


@DCMTK
def test_callers_not_on_the_allow_list_are_rejected(server, mixed):
    srv = server("--allow", "SCANNER1", "--allow", "SCANNER2@127.0.0.1")
    refused = storescu(srv.port, mixed / "ct.dcm", aet="INTRUDER")
    assert refused.returncode != 0
    assert "reject" in (refused.stdout + refused.stderr).lower()
    assert not stored_files(srv.store)
    srv.wait_for("INTRUDER.*not on the allow list")
    assert storescu(srv.port, mixed / "ct.dcm", aet="SCANNER2").returncode == 0
    echo = subprocess.run([need("echoscu"), "-aet", "NOBODY", "-aec", "STORESCP", "127.0.0.1", str(srv.port)],
                          capture_output=True, text=True, timeout=30)
    assert echo.returncode != 0
    wrong_called = storescu(srv.port, mixed / "ct.dcm", aet="SCANNER1", aec="OTHERSCP")
    assert wrong_called.returncode != 0
    assert len(stored_files(srv.store)) == 1


@DCMTK
def test_concurrent_senders_lose_nothing(server, tmp_path):
    from pydicom import dcmread

    folders = []
    for k in range(4):
        folder = tmp_path / f"in{k}"
        make_study(folder, f"Study {k}", n=40, study_id=str(k + 1), patient=f"TEST^{k}")
        folders.append(folder)
    srv = server("--eostudy-timeout", "1", "-v")
    results = [None] * 4

    def send(k):
        results[k] = storescu(srv.port, folders[k], aet=f"SCANNER{k}")

    threads = [threading.Thread(target=send, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    sent = {dcmread(p, stop_before_pixels=True).SOPInstanceUID for f in folders for p in f.iterdir()}
    got = stored_files(srv.store)
    assert len(got) == 160 and {p.name.split(".", 1)[1] for p in got} == sent
    assert len({p.parent for p in got}) == 4
    # each study is complete once, after the timeout, with all its files
    for k in range(4):
        srv.wait_for(r"study .*: 40 read", timeout=30)
    assert not _parts(srv.store)


def test_a_sender_killed_mid_transfer_leaves_no_file(server, tmp_path):
    from pydicom import dcmread

    big = tmp_path / "big.dcm"
    make_study(tmp_path / "src", "Big", n=1)
    src = next((tmp_path / "src").iterdir())
    ds = dcmread(src)
    ds.PixelData = bytes(4 * 1024 * 1024)
    ds.Rows = ds.Columns = 1024
    ds.BitsAllocated = ds.BitsStored = 32
    ds.HighBit = 31
    ds.save_as(big)
    srv = server("--eostudy-timeout", "1")
    sender = start_half_sender(srv.port, MR_STORAGE, ds.SOPInstanceUID, big)
    try:
        assert sender.stdout.readline().strip() == "sent half"
        assert wait_until(lambda: _parts(srv.store), timeout=10), "no temporary file while receiving"
        sender.send_signal(signal.SIGKILL)
        sender.wait()
    finally:
        if sender.poll() is None:
            sender.kill()
    assert wait_until(lambda: not _parts(srv.store), timeout=10)
    assert not stored_files(srv.store)
    srv.wait_for("KILLED.*(closed|reset|ended)")


@DCMTK
def test_a_store_that_cannot_be_written_answers_failure(server, mixed):
    from pydicom import dcmread

    srv = server()
    study = dcmread(mixed / "ct.dcm", stop_before_pixels=True).StudyInstanceUID
    (srv.store / study).write_text("a file where the study folder should go\n")
    result = storescu(srv.port, mixed / "ct.dcm")
    text = result.stdout + result.stderr
    assert result.returncode != 0 or "A700" in text.upper() or "refused" in text.lower(), text
    assert not _parts(srv.store)
    assert (srv.store / study).read_text().startswith("a file where")


# -- routing by Study Description ----------------------------------------------------------------


@DCMTK
def test_completed_study_is_copied_where_study_description_says(server, tmp_path):
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="proj", dir="/tmp"))  # a short path: Study Description holds 64 characters
    (root / "alpha").mkdir(parents=True)
    good = make_study(tmp_path / "in", "Brain #-#" + str(root / "alpha" / "run1"), n=3, study_id="1")
    escape = make_study(tmp_path / "in2", "Evil #-#" + str(root) + "/../stolen", n=2, study_id="2")
    srv = server("--eostudy-timeout", "1", "--route-root", str(root), "-v")
    assert storescu(srv.port, tmp_path / "in").returncode == 0
    assert storescu(srv.port, tmp_path / "in2").returncode == 0
    study_folder = next(p for p in srv.store.iterdir() if len(list(p.glob("MR.*"))) == 3)
    srv.wait_for(rf"study {study_folder.name}: 3 read, 3 written")
    copied = sorted((root / "alpha" / "run1" / study_folder.name).glob("MR.*"))
    assert [p.name for p in copied] == sorted(p.name for p in study_folder.glob("MR.*"))
    assert all(p.read_bytes() == (study_folder / p.name).read_bytes() for p in copied)
    srv.wait_for(r"kept in the store: path .* contains '\.\.'")
    assert not (root.parent / "stolen").exists()
    shutil.rmtree(root)
    assert len(stored_files(srv.store)) == 5  # the store keeps everything
    assert len(good) == 3 and len(escape) == 2


def _router(roots, otherwise="keep"):
    from dcmpipe.plugins.storescp import StudyDescription, StudyDescriptionOptions

    return StudyDescription(StudyDescriptionOptions(roots=list(roots), otherwise=otherwise), Context())


def _item(description: str) -> Item:
    item = Item(source=Path("/store/1.2.3/MR.1"))
    item.header = {0x00081030: description, 0x0020000D: "1.2.3"}
    return item


def test_study_description_paths_that_escape_are_refused(tmp_path):
    root = tmp_path / "root"
    (root / "proj").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "link").symlink_to(outside)
    (root / "afile").write_text("x")
    router = _router([root])
    assert router.route(_item(f"Brain #-#{root}/proj")) == root / "proj"
    assert router.route(_item(f"Brain #-#{root}/proj/new  trailing words")) == root / "proj" / "new"
    refused = {
        "relative/path": "not absolute",
        f"{root}/proj/../../outside": "'..'",
        f"{outside}/x": "outside the allowed roots",
        f"{root}/link": "symbolic link",
        f"{root}/link/sub": "symbolic link",
        f"{root}/no/such/deep": "nor its parent",
        f"{root}/afile": "not a folder",
        "": "nothing after",
    }
    for wanted, why in refused.items():
        with pytest.raises(Skip, match=why):
            router.route(_item(f"Brain #-#{wanted}"))
    with pytest.raises(Skip, match="no '#-#<path>'"):
        router.route(_item("Brain"))
    assert _router([root], otherwise="next").route(_item(f"#-#{outside}")) is None
    with pytest.raises(Skip, match="no allowed roots"):
        _router([]).route(_item(f"#-#{root}/proj"))


def test_print_recipe_is_a_valid_recipe(tmp_path):
    from conftest import run_cli
    from dcmpipe.recipe import _loads, build_recipe

    result = run_cli("storescp", "--print-recipe", "--route-root", tmp_path, "--store", tmp_path / "s", "104")
    assert result.returncode == 0, result.stderr
    data = _loads(result.stdout)
    assert [next(iter(s)) for s in data["step"]] == ["read", "route", "name", "export"]
    recipe = build_recipe(data, tmp_path)
    assert recipe.steps[1].options.roots == [tmp_path.resolve()]


def test_study_recipe_with_a_read_step_is_refused(tmp_path):
    from conftest import run_cli

    recipe = tmp_path / "r.toml"
    recipe.write_text('[[step]]\nread = "files"\npath = "x"\n')
    result = run_cli("storescp", "--recipe", recipe, "--store", tmp_path / "s", "0")
    assert result.returncode != 0 and "must not have a read step" in result.stderr
    assert "Traceback" not in result.stderr


# -- profiles ----------------------------------------------------------------------------------


def test_site_profiles_are_toml_files(tmp_path, monkeypatch):
    from dcmpipe import DcmpipeError
    from dcmpipe.plugins.storescp import load_profile

    (tmp_path / "mronly.toml").write_text('[profile]\naccept = ["1.2.840.10008.5.1.4.1.1.4*"]\n'
                                          'refuse = ["1.2.840.10008.5.1.4.1.1.4.1"]\n')
    monkeypatch.setenv("DCMPIPE_STORESCP_PROFILES", str(tmp_path))
    profile = load_profile("mronly")
    assert profile.accepts(MR_STORAGE) and not profile.accepts("1.2.840.10008.5.1.4.1.1.4.1")
    assert not profile.accepts("1.2.840.10008.5.1.4.1.1.2")
    assert profile.accepts("1.2.840.10008.1.1")  # C-ECHO always
    enhanced, classic = load_profile("enhanced"), load_profile("classic")
    for uid in ("1.2.840.10008.5.1.4.1.1.4.1", "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.130"):
        assert enhanced.accepts(uid) and not classic.accepts(uid)
    assert enhanced.accepts(RAW_STORAGE) and classic.accepts(RAW_STORAGE)
    assert not enhanced.accepts("1.2.840.10008.5.1.4.1.2.1.1")  # query/retrieve is not storage
    (tmp_path / "bad.toml").write_text('[profile]\naccept = "everything"\ncolour = 1\n')
    with pytest.raises(DcmpipeError, match="unknown key 'colour'"):
        load_profile("bad")
    with pytest.raises(DcmpipeError, match="unknown storescp profile 'nope'"):
        load_profile("nope")


def test_prefix_table_has_dcmtk_names():
    from dcmpipe.plugins.storescp import prefixes

    table = prefixes()
    assert table[MR_STORAGE] == "MR" and table["1.2.840.10008.5.1.4.1.1.4.1"] == "MRe"
    assert table[RAW_STORAGE] == "RAW" and table["1.2.840.10008.5.1.4.1.1.2.1"] == "CTe"
    assert table["1.2.840.10008.5.1.4.1.1.2"] == "CT" and len(table) > 150


# -- retention ------------------------------------------------------------------------------------


def test_storescp_clean_deletes_only_old_studies_inside_the_store(tmp_path):
    from conftest import run_cli

    store = tmp_path / "store"
    old = time.time() - 40 * 86400

    def study(name, age=old, files=2):
        folder = store / name
        folder.mkdir(parents=True)
        for i in range(files):
            (folder / f"MR.{i}").write_bytes(b"x")
            os.utime(folder / f"MR.{i}", (age, age))
        os.utime(folder, (age, age))
        return folder

    gone = study("1.2.old")
    fresh = study("1.2.fresh", age=time.time() - 86400)
    mixed_age = study("1.2.mixed")
    (mixed_age / "MR.late").write_bytes(b"y")  # a file received today: the study is young
    receiving = study("1.2.receiving")
    (receiving / ".receiving").write_text(f"{os.getpid()}\n")  # a running process holds it
    outside = tmp_path / "outside"
    outside_files = study("../outside")
    (store / "link").symlink_to(outside)
    dry = run_cli("storescp-clean", "--older-than", "30d", "--dry-run", store)
    assert dry.returncode == 0, dry.stderr
    assert "would delete" in dry.stdout and str(gone) in dry.stdout
    assert gone.is_dir() and "1.2.fresh" not in dry.stdout and "receiving" not in dry.stdout
    done = run_cli("storescp-clean", "--older-than", "30d", store)
    assert done.returncode == 0, done.stderr
    assert not gone.exists()
    assert fresh.is_dir() and mixed_age.is_dir() and receiving.is_dir()
    assert (store / "link").is_symlink() and len(list(outside_files.iterdir())) == 2
    bad = run_cli("storescp-clean", "--older-than", "soon", store)
    assert bad.returncode != 0 and "not an age" in bad.stderr


def test_parse_age():
    from dcmpipe.plugins._storescp_store import parse_age

    assert parse_age("30d") == parse_age("30") == 30 * 86400
    assert parse_age("12h") == 43200 and parse_age("90m") == 5400 and parse_age("45s") == 45
    with pytest.raises(ValueError):
        parse_age("-1d")



# -- TLS, limits, the read step -------------------------------------------------------------------


def _openssl_certs(folder: Path) -> dict:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    folder.mkdir(parents=True, exist_ok=True)

    def run(*args):
        subprocess.run([openssl, *args], cwd=folder, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=Lab CA")
    for name in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2")
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "rogue.key", "-out", "rogue.pem", "-days", "2",
        "-subj", "/CN=rogue")
    return {name: folder / name for name in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key",
                                             "rogue.pem", "rogue.key")}


@DCMTK
def test_tls_with_client_certificates(server, mixed, tmp_path):
    certs = _openssl_certs(tmp_path / "pki")
    srv = server("--tls-cert", str(certs["server.pem"]), "--tls-key", str(certs["server.key"]),
                 "--tls-ca", str(certs["ca.pem"]))
    ok = storescu(srv.port, mixed / "emri.dcm",
                  extra=("+tls", str(certs["client.key"]), str(certs["client.pem"]), "+cf", str(certs["ca.pem"])))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert [p.name.split(".")[0] for p in stored_files(srv.store)] == ["MRe"]
    rogue = storescu(srv.port, mixed / "ct.dcm",
                     extra=("+tls", str(certs["rogue.key"]), str(certs["rogue.pem"]), "+cf", str(certs["ca.pem"])))
    plain = storescu(srv.port, mixed / "ct.dcm")
    assert rogue.returncode != 0 and plain.returncode != 0
    assert len(stored_files(srv.store)) == 1
    srv.wait_for("TLS handshake failed")


@DCMTK
def test_max_associations_rejects_the_one_too_many(server, mixed, tmp_path):
    from pydicom import dcmread

    srv = server("--max-associations", "1")
    ds = dcmread(mixed / "ct.dcm")
    holder = start_half_sender(srv.port, "1.2.840.10008.5.1.4.1.1.2", ds.SOPInstanceUID, mixed / "ct.dcm")
    try:
        assert holder.stdout.readline().strip() == "sent half"
        busy = storescu(srv.port, mixed / "emri.dcm")
        assert busy.returncode != 0
        srv.wait_for("more than 1 associations at once")
    finally:
        holder.kill()
        holder.wait()
    assert wait_until(lambda: storescu(srv.port, mixed / "emri.dcm").returncode == 0, timeout=10, step=0.3)
    assert [p.name.split(".")[0] for p in stored_files(srv.store)] == ["MRe"]


def test_read_step_yields_files_and_announces_complete_studies(tmp_path):
    """The storescp reader in-process: pynetdicom as the sender, items and GroupComplete out."""
    from pydicom import dcmread
    from pynetdicom import AE

    from dcmpipe import GroupComplete
    from dcmpipe.plugins.storescp import Storescp, StorescpOptions

    files = make_study(tmp_path / "in", "Read step", n=3)
    context = Context(base_dir=tmp_path)
    step = Storescp(StorescpOptions(port=0, store=tmp_path / "store", eostudy_timeout=0.5), context)
    seen, port = [], []

    def consume():
        for thing in step.read():
            seen.append(thing)
            if isinstance(thing, GroupComplete):
                context.stopping = True

    import logging

    class Catch(logging.Handler):
        def emit(self, record):
            found = __import__("re").search(r"listening on port (\d+)", record.getMessage())
            if found:
                port.append(int(found.group(1)))

    handler = Catch()
    context.log.addHandler(handler)
    try:
        thread = threading.Thread(target=consume, daemon=True)
        thread.start()
        assert wait_until(lambda: port, timeout=10)
        ae = AE(ae_title="PYNETDICOM")
        ae.add_requested_context(MR_STORAGE, "1.2.840.10008.1.2.1")
        assoc = ae.associate("127.0.0.1", port[0], ae_title="STORESCP")
        assert assoc.is_established
        statuses = [assoc.send_c_store(dcmread(f)).Status for f in files]
        assoc.release()
        thread.join(20)
    finally:
        context.log.removeHandler(handler)
    assert statuses == [0, 0, 0]
    items = [t for t in seen if isinstance(t, Item)]
    assert len(items) == 3 and all(i.source.is_file() and i.source.name.startswith("MR.") for i in items)
    study = dcmread(files[0]).StudyInstanceUID
    assert isinstance(seen[-1], GroupComplete) and seen[-1].key == (study,)


def test_quick_study_uid_agrees_with_pydicom_on_the_corpus():
    import warnings

    from pydicom import dcmread

    from _storescp_helpers import SHARED
    from dcmpipe.plugins._storescp_store import quick_study_uid

    corpus = SHARED / "corpus"
    if not corpus.is_dir():
        pytest.skip(f"{corpus} is absent")
    decided = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in sorted(p for p in corpus.rglob("*") if p.is_file()):
            try:
                ds = dcmread(path, stop_before_pixels=True)
                syntax = str(ds.file_meta.TransferSyntaxUID)
                data = dataset_bytes(path)[:65536]
            except Exception:
                continue
            expected = ds.get("StudyInstanceUID")
            for cut in (len(data), 200, 3000):
                found = quick_study_uid(data[:cut], syntax)
                if found is not False:
                    decided += 1
                    assert found == (str(expected) if expected else None), path
    assert decided > 100


def test_storescp_clean_step_in_a_recipe(tmp_path):
    from dcmpipe.testing import run

    store = tmp_path / "store"
    old = time.time() - 40 * 86400
    for name, age in (("1.2.old", old), ("1.2.new", time.time())):
        (store / name).mkdir(parents=True)
        (store / name / "MR.1").write_bytes(b"x")
        os.utime(store / name / "MR.1", (age, age))
        os.utime(store / name, (age, age))
    make_study(tmp_path / "in", "Any", n=1)
    recipe = {"step": [{"read": "files", "path": [str(tmp_path / "in")], "settle": 0},
                       {"transform": "storescp-clean", "store": str(store), "older_than": "30d"}]}
    assert run(recipe, base_dir=tmp_path, dry_run=True).exit_code == 0
    assert (store / "1.2.old").is_dir()
    assert run(recipe, base_dir=tmp_path).exit_code == 0
    assert not (store / "1.2.old").exists() and (store / "1.2.new" / "MR.1").is_file()
    from dcmpipe import RecipeError

    with pytest.raises(RecipeError, match="older_than"):
        run({"step": [recipe["step"][0], {**recipe["step"][1], "older_than": "soon"}]}, base_dir=tmp_path)


class _Peer:
    calling = "UNIT"


def test_store_tracks_studies_and_never_overwrites(tmp_path):
    from pydicom import dcmread

    from dcmpipe.plugins._storescp_store import StudyStore
    from dcmpipe.plugins.storescp import prefixes

    files = make_study(tmp_path / "in", "Unit", n=2)
    store = StudyStore(tmp_path / "store", prefixes())

    def send(path, finish=True, data=None):
        ds = dcmread(path, stop_before_pixels=True)
        incoming = store.begin(_Peer(), ds.SOPClassUID, ds.SOPInstanceUID, "1.2.840.10008.1.2.1")
        incoming.write(data if data is not None else dataset_bytes(path))
        return incoming.finish() if finish else incoming

    assert send(files[0]) == 0
    study = dcmread(files[0]).StudyInstanceUID
    folder = tmp_path / "store" / study
    now = time.monotonic()
    assert store.due(10, now + 5) == []
    pending = send(files[1], finish=False)  # an object of the study in transit holds it open
    assert store.due(10, now + 60) == []
    assert pending.finish() == 0
    assert store.due(10, time.monotonic() + 11) == [(folder, study)]
    assert (folder / ".receiving").is_file()
    store.closed_study(folder)
    assert not (folder / ".receiving").exists()
    # the same object again: stored once; a different one with the same UID: kept beside it
    assert send(files[0]) == 0
    changed = dataset_bytes(files[0])
    assert send(files[0], data=changed[:-1] + bytes([changed[-1] ^ 0xFF])) == 0
    names = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    first = "MR." + dcmread(files[0]).SOPInstanceUID
    assert names == sorted([first, first + ".2", "MR." + dcmread(files[1]).SOPInstanceUID])
    assert not _parts(tmp_path / "store")


@DCMTK
def test_a_late_object_reopens_its_study_and_the_recipe_runs_again(server, tmp_path):
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="late", dir="/tmp"))
    try:
        files = make_study(tmp_path / "in", f"Late #-#{root}/dest", n=3)
        srv = server("--eostudy-timeout", "1", "--route-root", str(root), "-v")
        assert storescu(srv.port, *files[:2]).returncode == 0
        srv.wait_for(r"study .*: 2 read, 2 written")
        assert storescu(srv.port, files[2]).returncode == 0
        srv.wait_for(r"study .*: 3 read, 3 written, 0 skipped, 0 bad, 0 failed")
        (study,) = (root / "dest").iterdir()
        assert len(list(study.glob("MR.*"))) == 3
    finally:
        shutil.rmtree(root)
