"""The movegui web server: standard library only, one local user.

Routes (every one needs the token, else 403):

* ``GET /`` the page, ``GET /static/<file>`` its script and style sheet;
* ``GET /api/form`` the fields; ``GET /api/browse?path=`` sub-folders for the picker;
* ``POST /api/recipe`` command line and recipe for the form; ``POST /api/preview`` the dry run;
* ``POST /api/run`` start the move; ``GET /api/events?job=`` its progress (server-sent events);
* ``POST /api/cancel``, ``POST /api/save`` (the recipe to a file), ``POST /api/quit``.

A POST must carry the token in the ``X-Dcmpipe-Token`` header, JSON, and an
``Origin`` of this server.  Requests are not logged (URLs and bodies hold
paths and patient data); the run's own messages go to the page, not the
terminal.
"""

from __future__ import annotations

import hmac
import io
import json
import logging
import re
import secrets
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from . import _movegui_form as form

DATA = Path(__file__).with_name("movegui_data")
STATIC = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
TICK = 0.25  # seconds between progress events
log = logging.getLogger("dcmpipe")


# -- a run (or a preview) driven from a thread ----------------------------------


def _general(reason: str) -> str:
    """A skip reason without its numbers, to count alike reasons together."""
    return re.sub(r"\d+(\.\d+)?", "N", reason)


class Job:
    """One move running in a thread: its live summary, stop switch and result."""

    def __init__(self, number: int, recipe_data: dict, jobs, total: int, mode: str):
        from dcmpipe.runner import Summary

        self.id = str(number)
        self.data = recipe_data
        self.jobs = jobs
        self.total = total
        self.mode = mode
        self.summary = Summary()
        self.stop = threading.Event()
        self.done = threading.Event()
        self.started = time.monotonic()
        self.reasons: Counter = Counter()
        self.messages: list[str] = []
        self.result: dict | None = None
        self.thread = threading.Thread(target=self._run, name=f"movegui-run-{number}", daemon=True)

    def on_item(self, item) -> None:
        if item.status == "skipped":
            self.reasons[_general(item.reason)] += 1

    def _run(self) -> None:
        from dcmpipe.recipe import build_recipe
        from dcmpipe.runner import run_recipe

        try:
            recipe = build_recipe(self.data, Path.cwd(), source="movegui")
            run_recipe(recipe, jobs=self.jobs, progress=False, out=io.StringIO(), summary=self.summary,
                       on_item=self.on_item, stop=self.stop)
            error = ""
        except Exception as exc:  # shown in the page; the server goes on
            error = f"{type(exc).__name__}: {exc}"
        s = self.summary
        self.result = {
            "read": s.read, "written": s.written, "skipped": s.skipped, "bad": s.bad, "failed": s.failed,
            "unhandled_bad": s.unhandled_bad, "interrupted": s.interrupted, "seconds": round(s.seconds, 2),
            "mode": self.mode, "line": s.line(), "error": error,
            "failures": [{"file": f, "reason": r} for f, r in s.failures],
            "skipped_reasons": self.reasons.most_common(20), "messages": self.messages[-200:],
        }
        self.done.set()

    def progress(self) -> dict:
        s = self.summary
        finished = s.written + s.skipped + s.bad + s.failed
        total = max(self.total, s.read, finished)
        elapsed = max(time.monotonic() - self.started, 1e-6)
        # two passes over the files: the headers are read, then the files are named and moved
        units = s.read + finished
        rate = units / elapsed
        left = (2 * total - units) / rate if rate > 0 else None
        reading = finished == 0 and s.read < total
        return {
            "phase": "stopping" if self.stop.is_set() else ("reading headers" if reading else self.mode),
            "read": s.read, "done": finished, "total": total,
            "files_per_s": round((finished if finished else s.read) / elapsed, 1),
            "seconds_left": None if left is None else round(max(left, 0.0), 1),
            "elapsed": round(elapsed, 1), "fraction": min(units / (2 * total), 1.0) if total else 0.0,
        }


class _JobMessages(logging.Handler):
    """The runner's messages from a job's thread go to that job (shown in the page)."""

    def __init__(self, app):
        super().__init__(logging.INFO)
        self.app = app

    def emit(self, record):
        job = self.app.job_of_thread(record.thread)
        if job is not None:
            try:
                job.messages.append(record.getMessage())
            except Exception:
                pass


class _NotFromJobs(logging.Filter):
    """Keeps the runner's messages about a job (file names, patient data) off the terminal."""

    def __init__(self, app):
        super().__init__()
        self.app = app

    def filter(self, record):
        return self.app.job_of_thread(record.thread) is None and not record.threadName.startswith("movegui")


# -- the application: what the routes do ----------------------------------------


class App:
    def __init__(self, command, command_name: str, values: dict | None = None):
        self.command = command
        self.name = command_name
        self.fields = form.fields(command, command_name)
        for f in self.fields:  # values given on the command line (move --gui) fill the form
            value = (values or {}).get(f["name"])
            if value is None:
                continue
            if f["kind"] == "flag":
                f["default"] = bool(value)
            elif f["kind"] in ("folder", "path"):
                f["default"] = str(form.resolve(str(value)))
            else:
                f["default"] = str(value)
        self.token = secrets.token_urlsafe(24)
        self.lock = threading.Lock()
        self.previewing = threading.Lock()
        self.jobs: dict[str, Job] = {}
        self.counter = 0
        self.server: ThreadingHTTPServer | None = None
        self.origins: set[str] = set()
        self.origins_hosts: set[str] = set()

    def job_of_thread(self, ident):
        for job in list(self.jobs.values()):
            if job.thread.ident == ident and not job.done.is_set():
                return job
        return None

    def running(self) -> Job | None:
        for job in self.jobs.values():
            if not job.done.is_set():
                return job
        return None

    def quit(self) -> None:
        """Stop a run in progress cleanly, then the server (from a thread other than the server's)."""
        job = self.running()
        if job is not None:
            job.stop.set()
            job.done.wait()
        if self.server is not None:
            self.server.shutdown()

    # what a form stands for

    def _values(self, body: dict) -> dict:
        values = body.get("values") or {}
        if not isinstance(values, dict):
            raise form.FormError({"": "bad request"})
        known = {f["name"] for f in self.fields}
        return {k: v for k, v in values.items() if k in known}

    def plan(self, body: dict, check: bool = True) -> dict:
        """Command line, recipe and parameters for a form; FormError for bad input."""
        from dcmpipe.recipe import dump_recipe

        values = self._values(body)
        if check:
            values = form.check_folders(self.fields, values)
            missing = {f["name"]: "choose a destination folder (or tick -r to rename in place)"
                       for f in self.fields if f["output"] and f["argument"] and not values.get(f["name"])
                       and not values.get("rename")}
            if missing:
                raise form.FormError(missing)
        args = form.argv(self.command, self.name, values)
        params = form.parse(self.command, self.name, args)
        data = form.recipe_of(self.command, self.name, args)
        keep = body.get("keep")
        note = ""
        if isinstance(keep, list) and not body.get("all", True):
            keep = [str(k) for k in keep]
            if not keep:
                raise form.FormError({"": "no study ticked: nothing to do"})
            _add_selection(data, keep)
            note = (f"{len(keep)} ticked studies: the study-select step of the recipe keeps them;"
                    " the command line alone would process every study")
        return {"args": args, "params": params, "data": data, "command": form.command_line(self.name, args),
                "toml": dump_recipe(data), "note": note, "values": values}

    def preview(self, body: dict) -> dict:
        from dcmpipe.recipe import build_recipe
        from dcmpipe.runner import run_recipe

        plan = self.plan({**body, "keep": None})
        data = json.loads(json.dumps(plan["data"]))
        _add_selection(data, [])  # reads the study and patient tags the preview shows
        collect = _Preview()
        with self.lock:
            if self.running():
                raise form.FormError({"": "a run is in progress"})
            if not self.previewing.acquire(blocking=False):
                raise form.FormError({"": "a preview is in progress"})
        try:
            summary = run_recipe(build_recipe(data, Path.cwd(), source="movegui preview"), dry_run=True,
                                 jobs=plan["params"].get("jobs"), progress=False, out=io.StringIO(),
                                 on_item=collect.add)
        finally:
            self.previewing.release()
        result = collect.result()
        result.update(command=plan["command"], toml=plan["toml"], line=summary.line(dry_run=True))
        source_field = next((f["name"] for f in self.fields if f["kind"] == "folder" and not f["output"]), "")
        warnings = {}
        if result["held"]:
            warnings[source_field] = (f"{result['held']} files are still arriving (changed in the last"
                                      f" {plan['params'].get('wait', 5)} s): they are left for the next run;"
                                      " wait until the transfer ends and preview again")
        if not result["studies"] and not result["nondicom"]["count"]:
            warnings[source_field] = "no files to process in this folder"
        result["warnings"] = warnings
        return result

    def start(self, body: dict) -> Job:
        plan = self.plan(body)
        with self.lock:
            if self.running() or self.previewing.locked():
                raise form.FormError({"": "a run or a preview is in progress"})
            self.counter += 1
            total = int(body.get("total") or 0)
            mode = "copy" if plan["params"].get("copy") else ("rename" if plan["params"].get("rename") else "move")
            job = Job(self.counter, plan["data"], plan["params"].get("jobs"), total, mode)
            self.jobs[job.id] = job
            job.thread.start()
        return job

    def save(self, body: dict) -> str:
        from dcmpipe.safefile import TargetExistsError, write_atomic

        plan = self.plan(body)
        text = str(body.get("path") or "").strip()
        if not text:
            raise form.FormError({"save": "give a file name for the recipe"})
        path = form.resolve(text)
        if path.suffix != ".toml":
            path = path.with_name(path.name + ".toml")
        parent = path.parent
        if not parent.is_dir():
            raise form.FormError({"save": f"{parent} is not a folder"})
        import os

        if not os.access(parent, os.W_OK | os.X_OK):
            raise form.FormError({"save": f"{parent} cannot be written (permissions)"})
        header = f"# {plan['command']}\n"
        try:
            write_atomic(path, (header + plan["toml"]).encode("utf-8"))
        except TargetExistsError:
            raise form.FormError({"save": f"{path} exists already; nothing is overwritten: choose another name"})
        return str(path)


def _add_selection(data: dict, keep: list[str]) -> None:
    """Put the study-select step after the readers (replacing a per-study question)."""
    steps = [s for s in data["step"] if s.get("transform") != "confirm-study"]
    readers = sum(1 for s in steps if "read" in s)
    steps.insert(readers, {"transform": "study-select", "keep": keep})
    data["step"] = steps


class _Preview:
    """Collects the dry run: study -> series -> files, patient, date."""

    EXAMPLES = 3

    def __init__(self):
        self.studies: dict = {}
        self.nondicom: list[str] = []
        self.held = 0
        self.total = 0
        self.skipped: Counter = Counter()
        self.failed: list = []

    def add(self, item) -> None:
        self.total += 1
        rel = item.extra.get("relpath") or (item.source.name if item.source else str(item))
        if item.extra.get("hold"):
            self.held += 1
        if item.status == "bad":
            self.nondicom.append(rel)
            return
        if item.status == "failed":
            self.failed.append({"file": str(item), "reason": item.reason})
            return
        get = item.get
        uid = str(get("StudyInstanceUID", ""))
        study = self.studies.get(uid)
        if study is None:
            study = self.studies[uid] = {
                "uid": uid, "study_id": str(get("StudyID", "") or ""), "patient": str(get("PatientName", "") or ""),
                "patient_id": str(get("PatientID", "") or ""), "date": _date(get("StudyDate", "")),
                "description": str(get("StudyDescription", "") or ""), "series": {}, "files": 0, "skipped": Counter(),
            }
        study["files"] += 1
        if item.status == "skipped":
            study["skipped"][_general(item.reason)] += 1
            self.skipped[_general(item.reason)] += 1
            return
        series_uid = str(get("SeriesInstanceUID", ""))
        series = study["series"].get(series_uid)
        target = item.name or ""
        folder, _, filename = target.rpartition("/")
        if series is None:
            number = get("SeriesNumber", "")
            series = study["series"][series_uid] = {
                "number": "" if number is None else str(number), "description": str(get("SeriesDescription", "") or ""),
                "folder": folder, "root": str(item.destination) if item.destination is not None else "",
                "files": 0, "examples": [],
            }
        series["files"] += 1
        examples = series["examples"]
        examples.append(filename)
        examples.sort()
        del examples[self.EXAMPLES:]

    def result(self) -> dict:
        studies = []
        for study in self.studies.values():
            series = sorted(study["series"].values(), key=lambda s: (_num(s["number"]), s["folder"]))
            studies.append({**study, "series": series, "series_count": len(series),
                            "skipped": study["skipped"].most_common(5)})
        studies.sort(key=lambda s: (s["date"], s["study_id"], s["patient"]))
        roots = sorted({s["root"] for study in studies for s in study["series"]})
        return {"studies": studies, "roots": roots, "total": self.total, "held": self.held, "failed": self.failed[:200],
                "nondicom": {"count": len(self.nondicom), "examples": sorted(self.nondicom)[:5]},
                "skipped": self.skipped.most_common(10)}


def _num(text: str):
    try:
        return (0, int(text))
    except ValueError:
        return (1, 0)


def _date(value) -> str:
    text = str(value or "")
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}" if len(text) == 8 and text.isdigit() else text


# -- HTTP -------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    server_version = "dcmpipe-movegui"
    sys_version = ""
    app: App  # set on the subclass made by serve()

    def handle(self):
        threading.current_thread().name = "movegui-request"  # its log records stay off the terminal
        super().handle()

    def log_message(self, format, *args):  # noqa: A002 - nothing logged: URLs hold paths and patient data
        pass

    # answers

    def _send(self, status: int, body: bytes, content_type: str, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy",
                         "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self';"
                         " img-src 'self' data:; frame-ancestors 'none'")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data) -> None:
        self._send(status, json.dumps(data).encode("utf-8"), "application/json")

    def _forbidden(self, why: str) -> None:
        self._send(403, f"403 forbidden: {why}\n".encode(), "text/plain; charset=utf-8")

    # checks

    def _allowed(self, query: dict, post: bool) -> bool:
        app = self.app
        host = self.headers.get("Host", "")
        if host not in app.origins_hosts:
            self._forbidden("unknown host")
            return False
        given = self.headers.get("X-Dcmpipe-Token", "") if post else (
            query.get("token", [""])[0] or self.headers.get("X-Dcmpipe-Token", ""))
        if not hmac.compare_digest(given.encode(), app.token.encode()):
            self._forbidden("a valid token is needed (open the address dcmpipe movegui printed)")
            return False
        if post:
            origin = self.headers.get("Origin") or ""
            if origin not in app.origins:
                self._forbidden("cross-origin request")
                return False
            if not (self.headers.get("Content-Type") or "").startswith("application/json"):
                self._forbidden("JSON expected")
                return False
        return True

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        if length > 10_000_000:
            raise form.FormError({"": "request too large"})
        raw = self.rfile.read(length) if length else b"{}"
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            raise form.FormError({"": "bad request"}) from None
        if not isinstance(body, dict):
            raise form.FormError({"": "bad request"})
        return body

    # routes

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if not self._allowed(query, post=False):
            return
        app = self.app
        try:
            if url.path in ("/", "/index.html"):
                page = (DATA / "index.html").read_text(encoding="utf-8")
                page = page.replace("{{token}}", app.token).replace("{{command}}", app.name)
                self._send(200, page.encode("utf-8"), "text/html; charset=utf-8")
            elif url.path.startswith("/static/") and url.path[8:] in STATIC:
                name = url.path[8:]
                self._send(200, (DATA / name).read_bytes(), STATIC[name])
            elif url.path == "/api/form":
                self._json(200, {"command": app.name, "fields": app.fields, "cwd": str(Path.cwd())})
            elif url.path == "/api/browse":
                self._json(200, form.browse(query.get("path", [""])[0]))
            elif url.path == "/api/events":
                self._events(query.get("job", [""])[0])
            else:
                self._send(404, b"404 not found\n", "text/plain; charset=utf-8")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_POST(self):
        url = urlsplit(self.path)
        if not self._allowed(parse_qs(url.query), post=True):
            return
        app = self.app
        try:
            body = self._body()
            if url.path == "/api/recipe":
                plan = app.plan(body, check=bool(body.get("check")))
                self._json(200, {k: plan[k] for k in ("command", "toml", "note")})
            elif url.path == "/api/preview":
                self._json(200, app.preview(body))
            elif url.path == "/api/run":
                job = app.start(body)
                self._json(200, {"job": job.id})
            elif url.path == "/api/cancel":
                job = app.running()
                if job is not None:
                    job.stop.set()
                self._json(200, {"stopping": job is not None})
            elif url.path == "/api/save":
                self._json(200, {"saved": app.save(body)})
            elif url.path == "/api/quit":
                self._json(200, {"quitting": True})
                threading.Thread(target=app.quit, name="movegui-quit", daemon=True).start()
            else:
                self._send(404, b"404 not found\n", "text/plain; charset=utf-8")
        except form.FormError as exc:
            self._json(400, {"errors": exc.errors})
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as exc:  # never a traceback in the page
            self._json(500, {"errors": {"": f"internal error: {type(exc).__name__}: {exc}"}})

    def _events(self, job_id: str) -> None:
        job = self.app.jobs.get(job_id)
        if job is None:
            self._send(404, b"404 no such run\n", "text/plain; charset=utf-8")
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        finished = False
        while True:
            if finished:
                message = f"event: done\ndata: {json.dumps(job.result)}\n\n"
            else:
                message = f"event: progress\ndata: {json.dumps(job.progress())}\n\n"
            self.wfile.write(message.encode("utf-8"))
            self.wfile.flush()
            if finished:
                return
            finished = job.done.wait(TICK)  # the first progress event goes out at once


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def _graphical() -> bool:
    """Whether a browser window can open here (a text browser would take over an SSH session)."""
    import os

    if os.environ.get("BROWSER") or sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def serve(command, command_name: str, port: int = 0, open_browser: bool = True, values: dict | None = None) -> None:
    """Serve the form for ``command`` on 127.0.0.1 until Ctrl-C or Quit; ``values`` fill the form."""
    import click

    app = App(command, command_name, values)
    handler = type("BoundHandler", (Handler,), {"app": app})
    try:
        server = _Server(("127.0.0.1", port), handler)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}") from None
    app.server = server
    port = server.server_address[1]
    app.origins = {f"http://127.0.0.1:{port}", f"http://localhost:{port}"}
    app.origins_hosts = {f"127.0.0.1:{port}", f"localhost:{port}"}
    messages = _JobMessages(app)
    quiet = _NotFromJobs(app)
    log.addHandler(messages)
    for h in log.handlers:
        if h is not messages:
            h.addFilter(quiet)
    url = f"http://127.0.0.1:{port}/?token={app.token}"
    print(f"dcmpipe movegui: {url}", flush=True)
    if open_browser and _graphical():
        import webbrowser

        threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()
    elif open_browser:
        print("dcmpipe movegui: no graphical display here: open the address above in a browser"
              " (through an SSH tunnel: see dcmpipe movegui --help)", file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        job = app.running()
        if job is not None:
            print("dcmpipe movegui: stopping the run after the files in progress (Ctrl-C again to abort)",
                  file=sys.stderr, flush=True)
            job.stop.set()
            job.done.wait()
    finally:
        server.server_close()
        log.removeHandler(messages)
        for h in log.handlers:
            h.removeFilter(quiet)
    print("dcmpipe movegui: stopped", file=sys.stderr, flush=True)
