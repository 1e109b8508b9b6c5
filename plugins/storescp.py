"""storescp: the DICOM receiver the scanners send to, with study routing and retention.

* ``dcmpipe storescp [options] PORT`` receives C-STORE (and answers C-ECHO),
  writes every object as it was received to ``STORE/<study>/<prefix>.<SOP
  Instance UID>`` (DCMTK's prefixes: ``MR``, ``MRe``, ``RAW``, ``CT`` ...),
  and when a study has been quiet for ``--eostudy-timeout`` seconds runs a
  recipe on its folder (by default: the ``study-description`` route).
* read ``storescp``: the same receiver as the source of a recipe: every stored
  file is an item; a completed study is announced with ``GroupComplete``.
* route ``study-description``: ``#-#<path>`` in Study Description, checked
  against allowed roots; name ``study-folder``: ``<study folder>/<file>``.
* ``dcmpipe storescp-clean --older-than 30d STORE``: retention clean-up; the
  transform ``storescp-clean`` does the same once per run of a recipe.

The network code is in ``_storescp_net.py``, the storage in ``_storescp_store.py``;
profiles (which SOP classes are accepted) are TOML files in ``storescp_data/profiles``.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

import click

from dcmpipe import GroupComplete, Item, Namer, Reader, Router, Skip, Transform, hookimpl, option

DATA = Path(__file__).resolve().parent / "storescp_data"
PROFILE_DIR_ENV = "DCMPIPE_STORESCP_PROFILES"


# -- profiles and prefixes ---------------------------------------------------------------


def _toml(path: Path) -> dict:
    import tomllib

    with open(path, "rb") as f:
        return tomllib.load(f)


def prefixes() -> dict[str, str]:
    """SOP Class UID -> DCMTK's file name prefix."""
    return {uid: row[0] for uid, row in _toml(DATA / "modalities.toml")["prefix"].items()}


def profile_dirs() -> list[Path]:
    """Where profiles are looked up: $DCMPIPE_STORESCP_PROFILES, the user's config, the built-ins."""
    dirs = []
    if os.environ.get(PROFILE_DIR_ENV):
        dirs.append(Path(os.environ[PROFILE_DIR_ENV]))
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    dirs += [config / "dcmpipe" / "storescp", DATA / "profiles"]
    return dirs


def load_profile(name: str):
    """A profile by name (searched in :func:`profile_dirs`) or by the path of a TOML file."""
    from dcmpipe import DcmpipeError

    from ._storescp_net import Profile

    path = Path(name)
    if not (name.endswith(".toml") and path.is_file()):
        found = [d / f"{name}.toml" for d in profile_dirs() if (d / f"{name}.toml").is_file()]
        if not found:
            known = sorted({p.stem for d in profile_dirs() if d.is_dir() for p in d.glob("*.toml")})
            raise DcmpipeError(f"unknown storescp profile {name!r}; known: {', '.join(known)}")
        path = found[0]
    try:
        table = _toml(path).get("profile", {})
    except (OSError, ValueError) as exc:
        raise DcmpipeError(f"{path}: not a readable TOML profile: {exc}") from None
    problems = [f"unknown key {k!r}" for k in table if k not in ("description", "accept", "refuse", "prefer")]
    for key in ("accept", "refuse", "prefer"):
        if not isinstance(table.get(key, []), list) or not all(isinstance(v, str) for v in table.get(key, [])):
            problems.append(f"{key!r} must be a list of UIDs or patterns")
    if not table.get("accept"):
        problems.append("'accept' lists no SOP class")
    if problems:
        raise DcmpipeError(f"{path}: bad storescp profile: " + "; ".join(problems))
    return Profile(name=path.stem, accept=table["accept"], refuse=table.get("refuse", []),
                   prefer=table.get("prefer") or Profile.__dataclass_fields__["prefer"].default_factory(),
                   description=table.get("description", ""), storage=frozenset(prefixes()))


# -- the receiver, as used by the command and by the read step ------------------------------


@dataclass
class ServerSettings:
    port: int
    store: Path
    aetitle: str = "STORESCP"
    profile: str = "enhanced"
    eostudy_timeout: float = 30.0
    allow: tuple = ()
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    max_associations: int = 10
    bind: str = ""
    fsync: bool = False


class Receiver:
    """Server + store + a thread that hands over each completed study to ``on_study``."""

    def __init__(self, settings: ServerSettings, on_study, on_stored=None, log=None):
        from dcmpipe import DcmpipeError

        from ._storescp_net import Policy, Server, resolve_allow, ssl_context
        from ._storescp_store import StudyStore

        import pynetdicom.pdu  # noqa: F401  (imported now, not in the first association: ~0.2 s)

        self.log = log or __import__("logging").getLogger("dcmpipe")
        self.settings, self.on_study = settings, on_study
        if not 1 <= len(settings.aetitle) <= 16:
            raise DcmpipeError(f"--aetitle {settings.aetitle!r}: 1 to 16 characters")
        try:
            allow = resolve_allow(list(settings.allow))
        except ValueError as exc:
            raise DcmpipeError(str(exc)) from None
        profile = load_profile(settings.profile)
        tls = None
        if settings.tls_cert or settings.tls_key or settings.tls_ca:
            if not settings.tls_cert:
                raise DcmpipeError("TLS needs --tls-cert (and --tls-key unless the certificate file holds the key)")
            try:
                tls = ssl_context(settings.tls_cert, settings.tls_key, settings.tls_ca)
            except (OSError, ValueError) as exc:
                raise DcmpipeError(f"TLS: cannot load the certificate, key or CA: {exc}") from None
        try:
            self.store = StudyStore(settings.store, prefixes(), fsync=settings.fsync, on_stored=on_stored)
        except OSError as exc:
            raise DcmpipeError(f"--store {settings.store}: {exc.strerror or exc}") from None
        policy = Policy(settings.aetitle, profile, allow, settings.max_associations)
        try:
            self.server = Server(policy, self.store, settings.bind, settings.port, tls)
        except OSError as exc:
            raise DcmpipeError(f"cannot listen on port {settings.port}: {exc.strerror or exc}") from None
        self.profile, self.tls = profile, tls
        self.stopping = threading.Event()
        self.studies: queue.Queue = queue.Queue()
        self.threads: list[threading.Thread] = []

    def start(self) -> "Receiver":
        self.server.start()
        for target, name in ((self._watch, "storescp-eostudy"), (self._work, "storescp-studies")):
            thread = threading.Thread(target=target, daemon=True, name=name)
            thread.start()
            self.threads.append(thread)
        return self

    def _watch(self) -> None:
        timeout = self.settings.eostudy_timeout
        tick = min(1.0, max(0.05, timeout / 5))
        while not self.stopping.wait(tick):
            for folder, uid in self.store.due(timeout):
                self.studies.put((folder, uid))

    def _work(self) -> None:
        while True:
            job = self.studies.get()
            if job is None:
                return
            folder, uid = job
            try:
                self.on_study(folder, uid)
            except Exception as exc:  # one study's failure never stops the receiver
                self.log.error("%s: study processing failed: %s: %s", folder, type(exc).__name__, exc)
            finally:
                self.store.closed_study(folder)

    def stop(self) -> None:
        """Stop receiving; the studies already complete are processed; open ones wait for the next start."""
        self.server.stop()
        self.stopping.set()
        self.studies.put(None)
        for thread in self.threads:
            thread.join(60)

    def banner(self) -> str:
        s = self.settings
        extra = [f"profile {self.profile.name}", f"end of study after {s.eostudy_timeout:g} s"]
        if self.tls:
            extra.append("TLS")
        if s.allow:
            extra.append("callers: " + ", ".join(s.allow))
        return f"storescp: {s.aetitle} listening on port {self.server.port}, storing in {s.store} (" \
               + ", ".join(extra) + ")"


# -- steps -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StorescpOptions:
    port: int = option(help="TCP port to listen on (0: any free port)")
    store: Path = option(help="folder for the received studies")
    aetitle: str = option("STORESCP", help="our (called) AE title")
    profile: str = option("enhanced", help="which SOP classes are accepted: enhanced, classic, a site profile or a .toml file")
    eostudy_timeout: float = option(30.0, help="a study is complete when no object of it arrived for this many seconds")
    allow: list[str] = option(factory=list, help="callers accepted, as AE or AE@host (empty: everyone)")
    tls_cert: Path | None = option(None, help="TLS: our certificate (PEM)")
    tls_key: Path | None = option(None, help="TLS: our private key (PEM)")
    tls_ca: Path | None = option(None, help="TLS: accept only callers with a certificate signed by this CA")
    max_associations: int = option(10, help="associations at once; more are refused (A-ASSOCIATE-RJ)")
    fsync: bool = option(False, help="fsync each file before answering the sender")

    def __post_init__(self):
        if not 0 <= self.port <= 65535:
            raise ValueError(f"option 'port': {self.port} is not a TCP port")
        if self.eostudy_timeout <= 0:
            raise ValueError("option 'eostudy_timeout': must be more than 0 seconds")


class Storescp(Reader):
    """A DICOM receiver: every stored file is an item; a quiet study is announced complete."""

    id = "storescp"
    Options = StorescpOptions

    def read(self):
        o = self.options
        settings = ServerSettings(o.port, o.store, o.aetitle, o.profile, o.eostudy_timeout, tuple(o.allow),
                                  o.tls_cert, o.tls_key, o.tls_ca, o.max_associations, "", o.fsync)
        events: queue.Queue = queue.Queue()
        receiver = Receiver(settings, on_study=lambda folder, uid: events.put(("study", folder, uid)),
                            on_stored=lambda path, uid: events.put(("file", path, uid)), log=self.context.log)
        receiver.start()
        self.context.log.warning("%s", receiver.banner())
        try:
            while not self.context.stopping:
                try:
                    kind, path, uid = events.get(timeout=0.5)
                except queue.Empty:
                    continue
                if kind == "file":
                    yield Item(source=path, extra={"relpath": path.name, "root": str(path.parent)})
                else:
                    yield GroupComplete("study", (uid or "",))
        finally:
            receiver.stop()


@dataclass(frozen=True)
class StudyDescriptionOptions:
    roots: list[Path] = option(factory=list, help="folders a '#-#' path must lie in (none: nothing is routed)")
    marker: str = option("#-#", help="text before the path in Study Description (0008,1030)")
    otherwise: Literal["keep", "next"] = option(
        "keep", help="a study without a usable path: 'keep' it in the store (skipped), or let the 'next' route decide")


class StudyDescription(Router):
    """'#-#<path>' in Study Description copies the study there (absolute, inside the allowed roots)."""

    id = "study-description"
    Options = StudyDescriptionOptions
    tags = ("StudyDescription", "StudyInstanceUID")

    def __init__(self, options, context):
        super().__init__(options, context)
        self.verdicts: dict[str, tuple] = {}
        self.told: set = set()

    def check(self, wanted: str) -> tuple[Path | None, str]:
        """(the folder, "") when ``wanted`` is a usable destination, else (None, why not)."""
        if not wanted:
            return None, f"nothing after {self.options.marker!r}"
        if "\0" in wanted or not wanted.startswith("/"):
            return None, f"path {wanted!r} is not absolute"
        if ".." in PurePosixPath(wanted).parts:
            return None, f"path {wanted!r} contains '..'"
        if not self.options.roots:
            return None, "no allowed roots are configured (route-root)"
        path = Path(os.path.normpath(wanted))
        roots = [(os.path.normpath(r), os.path.realpath(r)) for r in self.options.roots]
        if not any(str(path) == r or str(path).startswith(r.rstrip("/") + "/") for r, _ in roots):
            return None, f"path {wanted!r} is outside the allowed roots ({', '.join(r for r, _ in roots)})"
        if path.is_dir():
            real = os.path.realpath(path)
        elif os.path.lexists(path):
            return None, f"{wanted!r} exists and is not a folder"
        elif path.parent.is_dir():
            real = os.path.join(os.path.realpath(path.parent), path.name)
        else:
            return None, f"neither {wanted!r} nor its parent folder exists"
        if not any(real == r or real.startswith(r.rstrip("/") + "/") for _, r in roots):
            return None, f"path {wanted!r} leads outside the allowed roots through a symbolic link (to {real})"
        writable = path if path.is_dir() else path.parent
        if not os.access(writable, os.W_OK | os.X_OK):
            return None, f"folder {str(writable)!r} is not writable"
        return path, ""

    def route(self, item):
        text = str(item.get("StudyDescription") or "")
        marker = self.options.marker
        if marker in text:
            after = text.split(marker, 1)[1].split()
            wanted = after[0] if after else ""
            if wanted not in self.verdicts:
                self.verdicts[wanted] = self.check(wanted)
            folder, why = self.verdicts[wanted]
            if folder is not None:
                return folder
        else:
            why = f"no '{marker}<path>' in Study Description"
        study = item.get("StudyInstanceUID") or (item.source.parent if item.source else "?")
        if (study, why) not in self.told:
            self.told.add((study, why))
            (self.context.log.warning if marker in text else self.context.log.info)(
                "study %s: kept in the store: %s", study, why)
        if self.options.otherwise == "next":
            return None
        raise Skip(f"kept in the store: {why}")


class StudyFolder(Namer):
    """<study folder>/<file name>: the study as it was received."""

    id = "study-folder"

    def name(self, item):
        from dcmpipe.naming import component

        if item.source is None:
            raise ValueError("study-folder names files; this item has none")
        return f"{component(item.source.parent.name)}/{item.source.name}"


@dataclass(frozen=True)
class StorescpCleanOptions:
    store: Path = option(help="the storescp store whose old study folders are deleted")
    older_than: str = option("30d", help="age limit: 30d, 12h, 90m, 45s (a plain number: days)")

    def __post_init__(self):
        from ._storescp_store import parse_age

        try:
            parse_age(self.older_than)
        except ValueError as exc:
            raise ValueError(f"option 'older_than': {exc}") from None


class StorescpClean(Transform):
    """Retention, once per run: delete the store's study folders older than the limit."""

    id = "storescp-clean"
    Options = StorescpCleanOptions
    group = "run"

    def transform_group(self, items):
        from ._storescp_store import clean, parse_age

        done = clean(self.options.store, parse_age(self.options.older_than), dry_run=self.context.dry_run)
        for folder, age, count, what in done:
            self.context.log.warning("storescp-clean: %s %s (%d files, %.1f days old)", what, folder, count,
                                     age / 86400)
        return items


@hookimpl
def dcmpipe_readers():
    return [Storescp]


@hookimpl
def dcmpipe_transforms():
    return [StorescpClean]


@hookimpl
def dcmpipe_routers():
    return [StudyDescription]


@hookimpl
def dcmpipe_namers():
    return [StudyFolder]


# -- the commands -------------------------------------------------------------------------

STORESCP_HELP = """Receive DICOM objects on PORT; run a recipe on each completed study.

\b
Every object is written as it was received (no decoding) to
STORE/<Study Instance UID>/<prefix>.<SOP Instance UID>, with DCMTK storescp's
prefixes (MR, MRe for Enhanced MR, RAW for Raw Data, CT, ...).  A study is
complete when none of its objects arrived for --eostudy-timeout seconds;
then the recipe runs on its folder.  The default recipe copies the study to
the folder named by '#-#<path>' in its Study Description, when that path is
absolute and inside a --route-root; otherwise the study stays in the store.

\b
Examples:
  dcmpipe storescp --store /data/incoming --route-root /data/projects 11112
  dcmpipe storescp --profile classic --allow PHILIPS_MR@mr1 --store in 104
  dcmpipe storescp --recipe on-study.toml --eostudy-timeout 60 --store in 11112
  dcmpipe storescp --tls-cert srv.pem --tls-key srv.key --tls-ca lab-ca.pem --store in 2762
  dcmpipe storescp --print-recipe --route-root /data/projects --store in 11112
"""


def study_steps(recipe_file: Path | None, roots: tuple) -> tuple[list, Path]:
    """The steps run on each completed study (after the read step), and the folder paths are relative to."""
    from dcmpipe import DcmpipeError

    if recipe_file is None:
        return [
            {"route": "study-description", "roots": [str(Path(r).resolve()) for r in roots]},
            {"name": "study-folder"},
            {"export": "dicom", "mode": "copy", "info": False},
        ], Path.cwd()
    path = Path(recipe_file)
    try:
        data = _toml(path)
    except (OSError, ValueError) as exc:
        raise DcmpipeError(f"{path}: cannot read the recipe: {exc}") from None
    steps = data.get("step", [])
    if any("read" in s for s in steps if isinstance(s, dict)):
        raise DcmpipeError(f"{path}: the study recipe must not have a read step: storescp reads each"
                           " completed study's folder itself")
    return steps, path.resolve().parent


def study_recipe(folder: Path, steps: list, name: str = "storescp study") -> dict:
    return {"recipe": {"name": f"{name} {folder.name}"},
            "step": [{"read": "files", "path": [str(folder)], "settle": 0.0}] + [dict(s) for s in steps]}


@click.command("storescp", help=STORESCP_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("port", type=click.IntRange(0, 65535))
@click.option("--aetitle", "-aet", default="STORESCP", show_default=True, help="our (called) AE title")
@click.option("--store", "-od", default=".", show_default=True, type=click.Path(file_okay=False),
              help="folder for the received studies")
@click.option("--profile", default="enhanced", show_default=True,
              help="enhanced (every storage SOP class), classic (no Enhanced MR/CT/PET), a site profile or a .toml file")
@click.option("--eostudy-timeout", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              metavar="SECONDS", help="a study is complete after this many seconds without an object of it")
@click.option("--recipe", "recipe_file", type=click.Path(exists=True, dir_okay=False),
              help="recipe (steps after reading) run on each completed study; default: study-description routing")
@click.option("--route-root", "roots", multiple=True, type=click.Path(file_okay=False),
              help="a folder '#-#<path>' may point into (repeatable; default recipe only)")
@click.option("--allow", multiple=True, metavar="AE[@HOST]", help="accept only these callers (repeatable)")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="TLS: our certificate (PEM)")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="TLS: our private key (PEM)")
@click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False),
              help="TLS: accept only callers whose certificate this CA signed")
@click.option("--max-associations", type=click.IntRange(1), default=10, show_default=True,
              help="associations at once; more are refused")
@click.option("--bind", default="", help="address to listen on (default: all)")
@click.option("--fsync", is_flag=True, help="fsync each file before answering success (slower, safer on power loss)")
@click.option("-q", "quiet", is_flag=True, help="only errors")
@click.option("-v", "verbose", is_flag=True, help="say what happens to every association and study")
@click.option("--dry-run", is_flag=True, help="receive and store, but only show what each study's recipe would do")
@click.option("--print-recipe", is_flag=True, help="print the recipe run on each completed study and exit")
@click.option("--debug", is_flag=True, help="debug messages and tracebacks")
def storescp_command(port, aetitle, store, profile, eostudy_timeout, recipe_file, roots, allow, tls_cert, tls_key,
                     tls_ca, max_associations, bind, fsync, quiet, verbose, dry_run, print_recipe, debug):
    import logging
    import signal

    from dcmpipe.cli import STATE, setup_logging
    from dcmpipe.recipe import build_recipe, dump_recipe
    from dcmpipe.registry import get_manager
    from dcmpipe.runner import run_recipe

    STATE["debug"] = STATE["debug"] or debug
    if quiet or verbose or debug:
        setup_logging(logging.DEBUG if debug else logging.INFO if verbose else logging.ERROR)
    log = logging.getLogger("dcmpipe")
    if recipe_file and roots:
        raise click.UsageError("--route-root configures the default recipe; put the roots in --recipe's steps")
    steps, base_dir = study_steps(Path(recipe_file) if recipe_file else None, roots)
    store = Path(store).resolve()
    if print_recipe:
        click.echo(dump_recipe(study_recipe(store / "<study>", steps)), nl=False)
        return
    get_manager()
    build_recipe(study_recipe(store / "check", steps), base_dir)  # every problem before listening

    def on_study(folder: Path, uid):
        recipe = build_recipe(study_recipe(folder, steps), base_dir)
        summary = run_recipe(recipe, dry_run=dry_run, jobs=1, progress=False, debug=STATE["debug"])
        line = f"study {folder.name}: {summary.line(dry_run)}"
        (log.error if summary.exit_code else log.warning if not quiet else log.info)("%s", line)

    settings = ServerSettings(port, store, aetitle, profile, eostudy_timeout, allow,
                              Path(tls_cert) if tls_cert else None, Path(tls_key) if tls_key else None,
                              Path(tls_ca) if tls_ca else None, max_associations, bind, fsync)
    receiver = Receiver(settings, on_study, log=log)
    if not recipe_file and not roots:
        log.warning("storescp: no --route-root given: every study stays in the store")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    receiver.start()
    click.echo(receiver.banner(), err=True)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    click.echo("storescp: stopping", err=True)
    receiver.stop()
    click.echo(f"storescp: {receiver.store.stored} objects stored", err=True)


CLEAN_HELP = """Delete study folders of STORE older than --older-than (retention).

\b
A study's age is the time since its newest file was written.  Only folders
directly inside STORE are considered; a symbolic link, a file or a study
still receiving (a running storescp holds its '.receiving' marker) is never
touched.  --dry-run lists what would go.

\b
Examples:
  dcmpipe storescp-clean --older-than 30d /data/incoming
  dcmpipe storescp-clean --older-than 12h --dry-run /data/incoming
  # nightly, in the crontab of the storescp user:
  15 3 * * *  dcmpipe storescp-clean -q --older-than 30d /data/incoming
"""


@click.command("storescp-clean", help=CLEAN_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@click.option("--older-than", default="30d", show_default=True, metavar="AGE",
              help="age limit: 30d, 12h, 90m, 45s (a plain number: days)")
@click.option("--dry-run", is_flag=True, help="list the study folders that would be deleted; delete nothing")
@click.option("-q", "quiet", is_flag=True, help="only errors")
def storescp_clean_command(store, older_than, dry_run, quiet):
    from ._storescp_store import clean, parse_age

    try:
        limit = parse_age(older_than)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None
    done = clean(Path(store), limit, dry_run=dry_run)
    for folder, age, count, what in done:
        if dry_run or not quiet or what.startswith("failed"):
            click.echo(f"{what}: {folder} ({count} files, {age / 86400:.1f} days old)")
    failed = sum(1 for *_, what in done if what.startswith("failed"))
    if not quiet:
        verb = "would delete" if dry_run else "deleted"
        click.echo(f"storescp-clean: {verb} {len(done) - failed} study folders older than {older_than}"
                   + (f", {failed} failed" if failed else ""), err=True)
    if failed:
        sys.exit(1)


@hookimpl
def dcmpipe_register_commands(cli):
    cli.add_command(storescp_command)
    cli.add_command(storescp_clean_command)
