"""dcm_movegui: the page in a real browser (Debian chromium + chromedriver via selenium), the
server's security rules over plain HTTP, and the runner's hooks the page relies on."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, run_cli

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
IMAGES = REPO / "docs" / "images"


# -- fixtures ---------------------------------------------------------------------


def _studies():
    from dcmpipe.demo import SeriesPlan, StudyPlan, default_studies

    return default_studies() + [
        StudyPlan("1003", "DEMO^CAROL", "P003", "Knee", [SeriesPlan(7, "PD TSE", slices=5),
                                                        SeriesPlan(8, "T2 ME", slices=2, echoes=3)]),
    ]


def _age(folder: Path) -> None:
    old = 1_000_000_000  # the files are not "still arriving"
    for path in folder.rglob("*"):
        os.utime(path, (old, old))


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """Three studies (3D, dynamics, echoes, cardiac phases, CT), a text file and a truncated file."""
    from dcmpipe.demo import make_export

    folder = tmp_path_factory.mktemp("movegui-template") / "incoming"
    make_export(folder, _studies())
    _age(folder)
    return folder


@pytest.fixture
def export(template, tmp_path) -> Path:
    folder = tmp_path / "incoming"
    shutil.copytree(template, folder)
    return folder


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


class Server:
    """``dcmpipe movegui --no-browser --port 0`` as a user starts it."""

    def __init__(self, *args, cwd: Path, command=("movegui", "--no-browser", "--port", "0")):
        self.proc = subprocess.Popen([sys.executable, "-m", "dcmpipe", *command, *args], cwd=cwd,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.first_line = self.proc.stdout.readline()
        match = re.fullmatch(r"dcmpipe movegui: (http://127\.0\.0\.1:(\d+))/\?token=([A-Za-z0-9_-]+)\n",
                             self.first_line)
        if not match:
            self.proc.kill()
            raise AssertionError(f"unexpected first line {self.first_line!r}: {self.proc.stderr.read()}")
        self.base, self.port, self.token = match.group(1), int(match.group(2)), match.group(3)
        self.url = f"{self.base}/?token={self.token}"

    def request(self, path, body=None, token=True, origin=True, method=None):
        headers = {}
        if token:
            headers["X-Dcmpipe-Token"] = self.token if token is True else token
        if body is not None:
            headers["Content-Type"] = "application/json"
            if origin:
                headers["Origin"] = self.base if origin is True else origin
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=60) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def stop(self) -> tuple[str, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=60)
        return self.first_line + out, err


@pytest.fixture
def browser(tmp_path):
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("chromium or chromedriver missing (Debian packages chromium, chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1500", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _wait(driver, condition, timeout=60, what="condition"):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition, message=f"timed out waiting for {what}")


def _open(driver, server):
    driver.get(server.url)
    _wait(driver, lambda d: d.find_element("tag name", "body").get_attribute("data-ready") == "yes", what="page")


def _fill(driver, values: dict) -> None:
    for name, value in values.items():
        box = driver.find_element("id", f"f-{name}")
        if box.get_attribute("type") == "checkbox":
            if box.is_selected() != bool(value):
                box.click()
        elif box.tag_name == "select":
            from selenium.webdriver.support.ui import Select

            Select(box).select_by_value(value)
        else:
            box.clear()
            box.send_keys(str(value))


def _preview(driver):
    form = driver.find_element("id", "form")
    count = int(form.get_attribute("data-previews") or 0)
    driver.find_element("id", "preview").click()
    _wait(driver, lambda d: int(form.get_attribute("data-previews") or 0) > count, what="preview")


def _screenshot(driver, tmp_path: Path, name: str) -> None:
    """Take a screenshot; it replaces docs/images/NAME when DCMPIPE_SCREENSHOTS=1 (or when it is missing)."""
    shot = tmp_path / name
    driver.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("DCMPIPE_SCREENSHOTS") == "1" or not (IMAGES / name).exists():
        IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, IMAGES / name)


def _text(driver, element_id: str) -> str:
    return driver.find_element("id", element_id).text


# -- the page in the browser --------------------------------------------------------


def test_form_has_one_field_per_move_switch_labelled_with_switch_and_help(browser, tmp_path):
    from dcmpipe.cli import _register_plugin_commands, cli

    _register_plugin_commands()
    move = cli.commands["move"]
    server = Server(cwd=tmp_path)
    try:
        _open(browser, server)
        labels = {e.get_attribute("for"): e.text for e in browser.find_elements("css selector", "#fields label")}
        for param in move.params:
            if param.name in ("help", "print_recipe", "dry_run", "debug", "quiet", "verbose", "all_studies", "gui"):
                continue
            label = labels.get(f"f-{param.name}")
            assert label is not None, f"no field for {param.opts or param.name}"
            switch = param.name.upper() if param.param_type_name == "argument" else min(param.opts, key=len)
            assert label.startswith(switch), label
            if getattr(param, "help", None):
                assert param.help in label
        # every field is a switch of the command: nothing hand-written beside them
        names = {p.name for p in move.params}
        assert {k[2:] for k in labels} <= names
        assert browser.find_element("id", "f-recurse").get_attribute("type") == "checkbox"
        assert browser.find_element("id", "f-modality").tag_name == "select"
    finally:
        server.stop()


def test_preview_untick_a_study_run_sorts_like_dcmpipe_move(browser, export, tmp_path):
    dest = tmp_path / "sorted"
    # the reference: `dcmpipe move` with the same switches on a copy of the same export
    reference_src = tmp_path / "reference-in"
    shutil.copytree(export, reference_src)
    result = run_cli("move", "-a", "-R", "-S", "--wait", "0", "-s", reference_src, tmp_path / "reference-out")
    assert result.returncode == 0 and "2 bad" in result.stderr, result.stderr  # to bad/
    reference = _digest(tmp_path / "reference-out")
    before = _digest(export)

    server = Server(cwd=tmp_path)
    try:
        _open(browser, server)
        _fill(browser, {"source": export, "recurse": True, "series_desc": True, "wait": "0", "destdir": dest})
        _wait(browser, lambda d: "-S" in _text(d, "command"), what="command line")
        _preview(browser)
        boxes = browser.find_elements("css selector", "input.study")
        assert sorted(b.get_attribute("data-study-id") for b in boxes) == ["1001", "1002", "1003"]
        assert all(b.is_selected() for b in boxes)  # -a: every box ticked
        studies = _text(browser, "studies")
        assert "DEMO^CAROL" in studies and "2024-03-15" in studies and "3 series" in studies
        assert "001_d0001" in studies and "001_e01" in studies  # example names: dynamics, echoes
        assert "0401_fMRI_rest" in studies  # the planned folder, with -S
        assert "non-DICOM" in _text(browser, "others") and "README.txt" in _text(browser, "others")
        assert not dest.exists(), "the preview wrote something"
        _screenshot(browser, tmp_path, "movegui-form.png")

        recipe_all, recipe_file = tmp_path / "all.toml", tmp_path / "sort.toml"
        save = browser.find_element("id", "f-save")
        save.send_keys(str(recipe_all))
        browser.find_element("id", "save").click()
        _wait(browser, lambda d: "saved" in _text(d, "saved"), what="recipe saved")

        carol = next(b for b in boxes if b.get_attribute("data-study-id") == "1003")
        carol.click()
        _wait(browser, lambda d: "study-select" in _text(d, "toml"), what="recipe with the selection")
        assert "dcmpipe move" in _text(browser, "command") and "-R" in _text(browser, "command")
        browser.find_element("id", "save").click()  # another recipe, same name: never overwritten
        _wait(browser, lambda d: "exists" in _text(d, "err-save"), what="save error")
        save.clear()
        save.send_keys(str(recipe_file))
        browser.find_element("id", "save").click()
        _wait(browser, lambda d: "saved" in _text(d, "saved"), what="recipe saved")

        browser.find_element("id", "run").click()
        _wait(browser, lambda d: d.find_element("id", "summary-box").get_attribute("data-state"), what="run")
        assert browser.find_element("id", "summary-box").get_attribute("data-state") == "finished"
        assert int(browser.find_element("id", "progress-text").get_attribute("data-updates") or 0) >= 1
        summary = _text(browser, "summary")
        _screenshot(browser, tmp_path, "movegui-run.png")
    finally:
        out, err = server.stop()

    # on disk: the ticked studies exactly as `dcmpipe move` sorts them, the unticked one untouched
    got = _digest(dest)
    expected = {k: v for k, v in reference.items() if not k.startswith("1003/")}
    assert got == expected
    assert any(k.startswith("1003/") for k in reference)
    left = _digest(export)
    assert left == {k: v for k, v in before.items() if k in left}
    carol_files = {v for k, v in reference.items() if k.startswith("1003/") and not k.endswith("info")}
    assert carol_files == set(left.values()), "the unticked study was touched, or something else stayed"
    assert sorted(before.values()) == sorted(list(left.values()) + [v for k, v in got.items()
                                                                    if not k.endswith("info")]), "a file was lost"
    assert re.search(r"moved\s+36\b", summary), summary  # 26 + 10 files of the two ticked studies
    # the saved recipe runs the same selection
    saved = tomllib.loads(recipe_file.read_text())
    select = [s for s in saved["step"] if s.get("transform") == "study-select"]
    assert len(select) == 1 and len(select[0]["keep"]) == 2
    assert run_cli("check", recipe_file).returncode == 0
    assert "study-select" not in recipe_all.read_text()
    # the server's own output holds no patient data and no paths
    for secret in ("DEMO^", "P001", str(export), "1003", "Knee"):
        assert secret not in out + err, f"{secret!r} in the server's output: {out + err}"


def test_bad_destination_is_shown_next_to_the_field_and_nothing_moves(browser, export, tmp_path):
    before = _digest(export)
    not_a_folder = tmp_path / "notes.txt"
    not_a_folder.write_text("a file, not a folder\n")
    server = Server(cwd=tmp_path)
    try:
        _open(browser, server)
        _fill(browser, {"source": export, "recurse": True, "wait": "0", "destdir": not_a_folder})
        _preview(browser)
        assert re.search("is not a folder|is a file", _text(browser, "err-destdir"))
        assert not browser.find_elements("css selector", "input.study")
        assert browser.find_element("id", "run").get_attribute("disabled")
        # inside the source, read recursively
        _fill(browser, {"destdir": export / "sorted"})
        _preview(browser)
        assert "inside the source" in _text(browser, "err-destdir")
        _fill(browser, {"source": tmp_path / "missing", "destdir": tmp_path / "out"})
        _preview(browser)
        assert "does not exist" in _text(browser, "err-source")
        assert _text(browser, "err-destdir") == ""
    finally:
        server.stop()
    assert _digest(export) == before
    assert not (tmp_path / "out").exists()


def test_files_still_arriving_are_named_next_to_the_source(browser, export, tmp_path):
    fresh = export / "DICOM" / "IM_00001"
    os.utime(fresh)  # just written by the scanner
    server = Server(cwd=tmp_path)
    try:
        _open(browser, server)
        _fill(browser, {"source": export, "recurse": True, "destdir": tmp_path / "out"})  # --wait 5 (default)
        _preview(browser)
        assert "1 files are still arriving" in _text(browser, "warn-source")
        assert browser.find_element("id", "run").is_enabled()  # the others can go; the fresh one waits
    finally:
        server.stop()


def test_cancel_button_stops_the_run_and_the_summary_says_so(browser, tmp_path):
    from dcmpipe.demo import SeriesPlan, StudyPlan, generate

    src = tmp_path / "incoming"
    generate(src, [StudyPlan("79", "DEMO^GUS", "P079", "Big", [SeriesPlan(1, "S1", slices=60, dynamics=60)])])
    _age(src)
    before = _digest(src)
    server = Server(cwd=tmp_path)
    try:
        _open(browser, server)
        _fill(browser, {"source": src, "wait": "0", "destdir": tmp_path / "out", "jobs": "1"})
        _preview(browser)
        browser.find_element("id", "run").click()
        _wait(browser, lambda d: d.find_element("id", "cancel").is_displayed(), what="Cancel button")
        browser.find_element("id", "cancel").click()
        _wait(browser, lambda d: d.find_element("id", "summary-box").get_attribute("data-state"), what="summary")
        assert browser.find_element("id", "summary-box").get_attribute("data-state") == "cancelled"
        assert "interrupted" in _text(browser, "summary-line")
        assert "cancelled" in _text(browser, "progress-text")
    finally:
        server.stop()
    moved = {k: v for k, v in _digest(tmp_path / "out").items() if not k.endswith("info")} \
        if (tmp_path / "out").exists() else {}
    assert len(moved) < len(before)
    assert sorted(before.values()) == sorted(list(_digest(src).values()) + list(moved.values()))


def test_failed_files_are_listed_with_their_reason(browser, export, tmp_path):
    dest = tmp_path / "sorted"
    taken = dest / "1002" / "0003"
    taken.mkdir(parents=True)
    (taken / "001").write_text("not the scanner's file\n")  # a different file where one would go
    server = Server(cwd=tmp_path)
    try:
        _open(browser, server)
        _fill(browser, {"source": export, "recurse": True, "wait": "0", "destdir": dest})
        _preview(browser)
        browser.find_element("id", "run").click()
        _wait(browser, lambda d: d.find_element("id", "summary-box").get_attribute("data-state"), what="summary")
        failures, summary = _text(browser, "failures"), _text(browser, "summary")
    finally:
        server.stop()
    assert re.search(r"failed\s+1\b", summary), summary
    assert "Failed files" in failures and "IM_" in failures and "exists" in failures, failures
    assert (taken / "001").read_text() == "not the scanner's file\n"  # never overwritten


def test_folder_picker_browses_the_server_file_system(browser, export, tmp_path):
    server = Server(cwd=tmp_path)
    try:
        _open(browser, server)
        _fill(browser, {"source": tmp_path})
        browser.find_element("id", "browse-source").click()
        _wait(browser, lambda d: "incoming/" in _text(d, "picker-list"), what="folder list")
        next(b for b in browser.find_elements("css selector", "#picker-list button") if b.text == "incoming/").click()
        _wait(browser, lambda d: "DICOM/" in _text(d, "picker-list"), what="sub-folder list")
        browser.find_element("id", "picker-choose").click()
        assert browser.find_element("id", "f-source").get_attribute("value") == str(export)
    finally:
        server.stop()


def test_quit_button_stops_the_server(browser, tmp_path):
    server = Server(cwd=tmp_path)
    _open(browser, server)
    browser.find_element("id", "quit").click()
    assert server.proc.wait(timeout=30) == 0
    _wait(browser, lambda d: d.find_element("id", "stopped").is_displayed(), what="stopped notice")


# -- security, over plain HTTP -------------------------------------------------------

ROUTES_GET = ["/", "/index.html", "/static/app.js", "/static/style.css", "/api/form", "/api/browse?path=/",
              "/api/events?job=1", "/nothing"]
ROUTES_POST = ["/api/recipe", "/api/preview", "/api/run", "/api/cancel", "/api/save", "/api/quit"]


def test_every_route_without_the_token_is_403(tmp_path):
    server = Server(cwd=tmp_path)
    try:
        for path in ROUTES_GET:
            assert server.request(path, token=False)[0] == 403, path
            sep = "&" if "?" in path else "?"
            assert server.request(f"{path}{sep}token=wrong", token=False)[0] == 403, path
        for path in ROUTES_POST:
            assert server.request(path, {}, token=False)[0] == 403, path
            assert server.request(path, {}, token="wrong")[0] == 403, path
            # the token in the URL is not enough for a change: POST needs the header
            assert server.request(f"{path}?token={server.token}", {}, token=False)[0] == 403, path
            # another web site cannot drive it, even with the token
            assert server.request(path, {}, origin="http://example.org")[0] == 403, path
            assert server.request(path, {}, origin=False)[0] == 403, path
        assert server.request("/api/quit", None, method="POST")[0] == 403  # not JSON
        assert server.request("/")[0] == 200
        assert server.request("/api/form")[0] == 200
        assert server.proc.poll() is None
    finally:
        server.stop()


def test_listens_on_loopback_only(tmp_path):
    import socket

    server = Server(cwd=tmp_path)
    try:
        try:
            addresses = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
        except socket.gaierror:
            addresses = set()
        # 127.0.0.2 is this machine too: a server bound to 0.0.0.0 would answer there
        addresses = (addresses | {"127.0.0.2"}) - {"127.0.0.1", "::1"}
        for address in addresses:
            with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as s:
                s.settimeout(2)
                assert s.connect_ex((address, server.port)) != 0, f"reachable on {address}"
    finally:
        server.stop()


def test_cancel_stops_cleanly_and_loses_nothing(tmp_path):
    from dcmpipe.demo import SeriesPlan, StudyPlan, generate

    src = tmp_path / "incoming"
    generate(src, [StudyPlan("77", "DEMO^DAVE", "P077", "Big", [SeriesPlan(n, f"S{n}", slices=40, dynamics=5)
                                                                   for n in (1, 2, 3)])])
    _age(src)
    before = _digest(src)
    server = Server(cwd=tmp_path)
    try:
        values = {"source": str(src), "destdir": str(tmp_path / "out"), "wait": "0"}
        status, body = server.request("/api/run", {"values": values, "total": len(before)})
        assert status == 200, body
        job = json.loads(body)["job"]
        assert server.request("/api/cancel", {})[0] == 200
        status, stream = server.request(f"/api/events?job={job}")
        done = json.loads(stream.decode().split("event: done\ndata: ", 1)[1].split("\n", 1)[0])
    finally:
        server.stop()
    assert done["interrupted"] is True
    moved = _digest(tmp_path / "out") if (tmp_path / "out").exists() else {}
    moved = {k: v for k, v in moved.items() if not k.endswith("info")}
    assert done["written"] == len(moved) < len(before)
    assert sorted(before.values()) == sorted(list(_digest(src).values()) + list(moved.values()))
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".") and p.is_file()], "a partial file remains"


def test_ctrl_c_during_a_run_stops_cleanly_and_loses_nothing(tmp_path):
    from dcmpipe.demo import SeriesPlan, StudyPlan, generate

    src = tmp_path / "incoming"
    generate(src, [StudyPlan("78", "DEMO^FAY", "P078", "Big", [SeriesPlan(1, "S1", slices=60, dynamics=10)])])
    _age(src)
    before = _digest(src)
    server = Server(cwd=tmp_path)
    values = {"source": str(src), "destdir": str(tmp_path / "out"), "wait": "0"}
    assert server.request("/api/run", {"values": values, "total": len(before)})[0] == 200
    out, err = server.stop()  # SIGINT, as Ctrl-C in the terminal
    assert server.proc.returncode == 0, err
    assert "stopped" in err and "Traceback" not in err
    moved = {k: v for k, v in _digest(tmp_path / "out").items() if not k.endswith("info")} \
        if (tmp_path / "out").exists() else {}
    assert sorted(before.values()) == sorted(list(_digest(src).values()) + list(moved.values()))
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".") and p.is_file()], "a partial file remains"


def test_events_arrive_every_quarter_second_while_running(tmp_path):
    from dcmpipe.demo import SeriesPlan, StudyPlan, generate

    src = tmp_path / "incoming"
    generate(src, [StudyPlan("5", "DEMO^EVE", "P005", "Big", [SeriesPlan(n, f"S{n}", slices=50, dynamics=6)
                                                                  for n in (1, 2)])])
    _age(src)
    server = Server(cwd=tmp_path)
    try:
        values = {"source": str(src), "destdir": str(tmp_path / "out"), "wait": "0", "copy": True}
        job = json.loads(server.request("/api/run", {"values": values, "total": 600})[1])["job"]
        req = urllib.request.Request(f"{server.base}/api/events?job={job}&token={server.token}")
        stamps, kinds = [], []
        with urllib.request.urlopen(req, timeout=60) as stream:
            for line in stream:
                if line.startswith(b"event: "):
                    stamps.append(time.monotonic())
                    kinds.append(line[7:].strip().decode())
    finally:
        server.stop()
    assert kinds[-1] == "done" and kinds.count("done") == 1
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert not gaps or max(gaps) < 1.0, gaps
    assert len(list((tmp_path / "out").rglob("*"))) > 600


def test_move_gui_switch_starts_the_page_with_the_switches_given(tmp_path, monkeypatch):
    monkeypatch.setenv("BROWSER", "true")  # the "browser" opened is /bin/true
    (tmp_path / "in").mkdir()
    server = Server(cwd=tmp_path, command=("move", "--gui", "-s", "in", "-R", "-c", "--wait", "2", "out"))
    try:
        status, body = server.request("/api/form")
        assert status == 200
        fields = {f["name"]: f["default"] for f in json.loads(body)["fields"]}
        assert fields["source"] == str(tmp_path / "in") and fields["destdir"] == str(tmp_path / "out")
        assert fields["recurse"] is True and fields["copy"] is True and fields["flat"] is False
        assert fields["wait"] == "2.0"
    finally:
        server.stop()


def test_help_and_bad_port(tmp_path):
    result = run_cli("movegui", "--help")
    assert result.returncode == 0 and "--no-browser" in result.stdout and "127.0.0.1" in result.stdout
    result = run_cli("movegui", "--no-browser", "--port", "70000")
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_a_new_switch_of_the_command_becomes_a_field_and_a_command_line_argument():
    import click

    from dcmpipe.plugins import _movegui_form as form

    @click.command("tool")
    @click.argument("out", required=False, type=click.Path(file_okay=False))
    @click.option("-s", "source", type=click.Path(exists=True, file_okay=False), help="source folder")
    @click.option("-x", "extra", is_flag=True, help="a switch added later")
    @click.option("--level", type=click.Choice(["low", "high"]), default="low", help="how much")
    @click.option("--print-recipe", is_flag=True)
    def tool(out, source, extra, level, print_recipe):
        pass

    fields = {f["name"]: f for f in form.fields(tool, "tool")}
    assert list(fields) == ["source", "extra", "level", "out"]  # command-line order; --print-recipe is a button
    assert fields["extra"]["kind"] == "flag" and fields["extra"]["help"] == "a switch added later"
    assert fields["level"]["choices"] == ["low", "high"] and fields["level"]["default"] == "low"
    assert fields["source"]["kind"] == "folder" and not fields["source"]["output"] and fields["out"]["output"]
    args = form.argv(tool, "tool", {"source": "/in", "extra": True, "level": "high", "out": "-odd"})
    assert args == ["-s", "/in", "-x", "--level", "high", "--", "-odd"]
    assert form.argv(tool, "tool", {"extra": False, "level": "low"}) == []  # defaults are left out


# -- the runner's hooks for a driving thread ------------------------------------------


def test_runner_fills_a_given_summary_calls_on_item_and_stops_on_the_event(export, tmp_path):
    from dcmpipe.recipe import build_recipe
    from dcmpipe.registry import get_manager
    from dcmpipe.runner import Summary, run_recipe

    get_manager()
    data = {"recipe": {"name": "t"}, "step": [
        {"read": "files", "path": [str(export)], "recursive": True, "settle": 0.0},
        {"route": "fixed", "dest": str(tmp_path / "out")},
        {"name": "hierarchical"},
        {"export": "dicom", "mode": "copy", "bad_dir": str(tmp_path / "out" / "bad")}]}
    summary, seen = Summary(), []
    assert run_recipe(build_recipe(data, tmp_path), summary=summary, on_item=seen.append, jobs=1) is summary
    assert len(seen) == summary.read == len(_digest(export)) and summary.written == summary.read - 2

    stop = threading.Event()
    stop.set()
    stopped = run_recipe(build_recipe({**data, "step": [{**data["step"][0]}, *data["step"][1:3],
                                                        {**data["step"][3], "mode": "move"}]}, tmp_path),
                         stop=stop, jobs=1)
    assert stopped.interrupted and stopped.read == 1 and stopped.written == 0
    assert len(_digest(export)) >= len(seen) - stopped.read  # at most the one item in flight finished
