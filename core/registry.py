"""Loading plugins and collecting their steps into a registry.

Three sources:

1. the built-in tools, from the explicit table ``BUILTINS``;
2. installed third-party plugins, from the entry-point group ``dcmpipe``;
3. lab-local rule files: every ``*.py`` in ``$DCMPIPE_PLUGINS_DIR`` (default
   ``~/.config/dcmpipe/plugins``).

A built-in is imported only when something it offers is asked for: ``dcmpipe dcm2par`` imports
the dcm2par module for its command, and for its recipe the modules offering the recipe's steps.
Installed and local plugins are loaded for every recipe run (they may add run hooks, or offer a
step id that a built-in offers too: a conflict).  ``get_manager()`` and ``get_registry()`` without
arguments load everything.

A plugin that fails to load is reported in one line and skipped; the others
keep working, and a recipe that needs the missing step fails with the reason.
``DCMPIPE_DISABLE_PLUGINS=1`` loads the built-ins only (the test suite sets it).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.machinery
import importlib.util
import logging
import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import pluggy

from . import __version__
from .errors import PluginError
from .steps import STEP_BASES, VERBS

log = logging.getLogger("dcmpipe")

# The built-in tools (modules of dcmpipe.plugins), in loading order, with what each offers:
# its steps ("verb id"), its commands ("command name") and any hook it implements beyond the
# six verbs and dcmpipe_register_commands ("hook name": such a built-in is loaded for every run).
# An explicit table (as pytest, datasette and llm keep their list): a stray file in the installed
# package never becomes a plugin, and a tool's module is imported only when one of its steps or
# commands is used.  tests/test_host.py checks the table against what the modules really offer,
# and that it names every public module of plugins/ (``_*.py`` modules are helpers, not plugins).
BUILTINS = {
    "files": ("read files",),
    "dcm_move": ("transform modality", "transform confirm-study", "route patient-history", "route fixed",
                 "route in-place", "name hierarchical", "name flat", "name unmove", "export dicom", "command move"),
    "movegui": ("transform study-select", "command movegui"),
    "dcm2json": ("export dcm2json", "command dcm2json"),
    "json2dcm": ("read dicom-json", "export json2dcm", "command json2dcm"),
    "storescp": ("read storescp", "route study-description", "name study-folder", "transform storescp-clean",
                 "command storescp", "command storescp-clean"),
    "send_dicom": ("send send_dicom", "transform copy-field", "command send", "command echo"),
    "dcmls": ("export listing", "command ls"),
    "dcminfo": ("transform info-values", "export info-table", "export rename", "name tag-values", "command info"),
    "dcm2par": ("export dcm2par", "command dcm2par"),
    "parrec": ("read parrec",),
    "dcms2e": ("transform dcms2e", "command dcms2e"),
    "dicomeread": ("export dicomeread", "command dicomeread"),
    "dcm2btable": ("export btable", "command dcm2btable"),
    "dcmshortacq": ("export shortacq", "command dcmshortacq"),
    "dcmexamcard": ("export examcard", "command dcmexamcard"),
    "dcmcleanup": ("read cleanup", "export cleanup", "command cleanup", "command dcmcleanup"),
}
_OFFERS = [(name, *offer.split()) for name, offers in BUILTINS.items() for offer in offers]
STEPS = {(kind, what): name for name, kind, what in _OFFERS if kind in VERBS}  # (verb, id) -> module
COMMANDS = {what: name for name, kind, what in _OFFERS if kind == "command"}  # command -> module
LISTENERS = tuple(dict.fromkeys(name for name, kind, _ in _OFFERS if kind == "hook"))  # loaded for every run

ENTRY_POINT_GROUP = "dcmpipe"
HOOK_OF_VERB = {
    "read": "dcmpipe_readers",
    "transform": "dcmpipe_transforms",
    "name": "dcmpipe_namers",
    "route": "dcmpipe_routers",
    "export": "dcmpipe_exporters",
    "send": "dcmpipe_senders",
}


class PluginInfo(NamedTuple):  # named tuples: a dataclass costs ~0.6 ms to define at start-up
    name: str
    dist: str
    version: str
    origin: str  # "builtin", "entry point", or the local file's path


class StepInfo(NamedTuple):
    cls: type
    plugin: PluginInfo


class Registry:
    """Every step class offered, by verb and id, and what went wrong loading."""

    def __init__(self):
        self.steps: dict = {verb: {} for verb in VERBS}
        self.conflicts: dict = {}  # (verb, id) -> [StepInfo, ...]
        self.problems: list = []
        self.plugins: dict = {}  # plugin name -> PluginInfo

    def lookup(self, verb: str, step_id: str) -> StepInfo:
        """The step ``step_id`` of ``verb``; PluginError naming the problem."""
        if (verb, step_id) in self.conflicts:
            names = ", ".join(f"{i.plugin.name} ({i.plugin.dist} {i.plugin.version})" for i in self.conflicts[verb, step_id])
            raise PluginError(f"{verb} step {step_id!r} is offered by more than one plugin: {names}")
        try:
            return self.steps[verb][step_id]
        except KeyError:
            raise PluginError(f"no {verb} step {step_id!r}") from None


class _Manager(pluggy.PluginManager):
    """The plugin manager; it loads built-ins one by one, and the other plugins once."""

    def __init__(self):
        super().__init__("dcmpipe")
        from dcmpipe import hookspecs

        self.add_hookspecs(hookspecs)
        self.spec_names = {name for name in dir(hookspecs) if name.startswith("dcmpipe_")}
        self.info: dict[str, PluginInfo] = {}
        self.problems: list[str] = []
        self.tried: set[str] = set()  # built-ins imported (or that failed to)
        self.run_plugins_loaded = False  # installed and local plugins, built-ins with run hooks
        self.registry: Registry | None = None  # collected steps, while the plugins stay the same

    def register(self, plugin, name=None):
        self.registry = None
        return super().register(plugin, name)

    def unregister(self, plugin=None, name=None):
        self.registry = None
        return super().unregister(plugin, name)

    def problem(self, text: str) -> None:
        """Report a problem once, in one line."""
        if text not in self.problems:
            self.problems.append(text)
            log.warning(text)

    def add(self, module, info: PluginInfo) -> None:
        if info.origin != "builtin" and info.name in BUILTINS:  # whichever is loaded first
            self.problem(f"plugin {info.name!r} ({info.origin}) not loaded: a built-in plugin has that name")
            return
        try:
            self.register(module, name=info.name)
        except ValueError as exc:  # a second plugin under the same name
            self.problem(f"plugin {info.name!r} ({info.origin}) not loaded: {exc}")
            return
        self.info[info.name] = info
        unknown = [name for name in dir(module) if name.startswith("dcmpipe_")
                   and callable(getattr(module, name)) and name not in self.spec_names]
        if unknown:
            self.problem(f"plugin {info.name!r}: {', '.join(unknown)} matches no dcmpipe hook (misspelled?)")

    def load_builtin(self, name: str):
        """Import and register the built-in ``name`` (once); its module, or None if it is broken."""
        if name not in self.tried:
            self.tried.add(name)
            try:
                module = importlib.import_module(f"{__package__}.plugins.{name}")
            except Exception as exc:  # one broken tool must not take the others down
                self.problem(f"built-in plugin {name!r} failed to load: {type(exc).__name__}: {exc}")
                return None
            self.add(module, PluginInfo(name, "dcmpipe", __version__, "builtin"))
        return self.get_plugin(name)

    def load_for_runs(self) -> None:
        """Load (once) what every run needs: the installed and local plugins, the built-ins with run hooks."""
        if self.run_plugins_loaded:
            return
        self.run_plugins_loaded = True
        for name in LISTENERS:
            self.load_builtin(name)
        if not os.environ.get("DCMPIPE_DISABLE_PLUGINS"):
            _load_entry_points(self)
            _load_local(self)

    def impls(self, hookname: str) -> list:
        """A hook's implementations, built-ins first (in table order), then the others as loaded."""
        rank = {name: n for n, name in enumerate(BUILTINS)}  # no other plugin may take a built-in's name
        return sorted(getattr(self.hook, hookname).get_hookimpls(), key=lambda i: rank.get(i.plugin_name, len(rank)))


def _may_offer_entry_points() -> bool:
    """Whether an installed distribution may declare ``[dcmpipe]`` entry points.

    A look into every ``*.dist-info/entry_points.txt`` on ``sys.path`` (~2 ms) spares most runs
    importlib.metadata (~25 ms with its imports).  Whatever this look cannot judge (a zip or egg
    on sys.path, another distribution finder) answers True: importlib.metadata decides.
    """
    if any(getattr(finder, "find_distributions", None) is not None and finder is not importlib.machinery.PathFinder
           for finder in sys.meta_path):
        return True
    header = re.compile(rb"^\s*\[\s*" + ENTRY_POINT_GROUP.encode() + rb"\s*\]\s*$", re.MULTILINE)
    for entry in sys.path:
        folder = entry or "."
        if not os.path.isdir(folder) or folder.endswith(".egg"):
            if os.path.exists(folder):
                return True
            continue
        try:
            children = os.listdir(folder)
        except OSError:  # importlib.metadata skips an unreadable folder too
            continue
        for child in children:
            if child.lower().endswith((".dist-info", ".egg-info")):
                try:
                    with open(os.path.join(folder, child, "entry_points.txt"), "rb") as f:
                        if header.search(f.read()):
                            return True
                except OSError:  # no entry points (or an .egg-info file)
                    continue
    return False


def _load_entry_points(pm: _Manager) -> None:
    if not _may_offer_entry_points():
        return
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        info = PluginInfo(ep.name, dist.name if dist else "?", dist.version if dist else "?", "entry point")
        try:
            module = ep.load()
        except Exception as exc:  # a broken plugin must not take the host down
            pm.problem(f"plugin {ep.name!r} ({info.dist}) failed to load: {type(exc).__name__}: {exc}")
            continue
        pm.add(module, info)


def plugins_dir() -> Path:
    env = os.environ.get("DCMPIPE_PLUGINS_DIR")
    if env:
        return Path(env)
    config = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config) / "dcmpipe" / "plugins"


def _load_local(pm: _Manager) -> None:
    folder = plugins_dir()
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.py")):
        modname = f"dcmpipe_local_{path.stem}"
        info = PluginInfo(path.stem, "local", "-", str(path))
        try:
            spec = importlib.util.spec_from_file_location(modname, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[modname] = module
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(modname, None)
            pm.problem(f"local plugin {path} failed to load: {type(exc).__name__}: {exc}")
            continue
        pm.add(module, info)


_manager: _Manager | None = None


def manager() -> _Manager:
    """The process's plugin manager, as loaded so far (nothing on first use)."""
    global _manager
    if _manager is None:
        _manager = _Manager()
    return _manager


def get_manager(builtins: Iterable[str] | None = None) -> _Manager:
    """The plugin manager, loaded for a run: the built-ins named in ``builtins`` (default: every
    one), then the installed and local plugins and the built-ins with run hooks."""
    pm = manager()
    for name in BUILTINS if builtins is None else builtins:
        pm.load_builtin(name)
    pm.load_for_runs()
    return pm


def reset() -> None:
    """Forget loaded plugins (tests register throwaway plugins, then reset)."""
    global _manager
    _manager = None


def get_registry(steps: Iterable[tuple[str, str]] | None = None) -> Registry:
    """Every loaded plugin's steps (a broadcast), keyed by verb and id.

    ``steps``: the (verb, id) pairs a recipe uses; only the built-ins offering them are imported
    (default: every built-in).  Installed and local plugins are always loaded, so a step id
    offered by one of them and by a built-in is a conflict whichever the recipe names.
    """
    pm = get_manager(None if steps is None else {STEPS[s] for s in steps if s in STEPS})
    if pm.registry is None:
        pm.registry = _collect(pm)
    return pm.registry


def _collect(pm: _Manager) -> Registry:
    reg = Registry()
    for verb, hookname in HOOK_OF_VERB.items():
        for impl in pm.impls(hookname):
            info = pm.info.get(impl.plugin_name) or PluginInfo(impl.plugin_name, "?", "?", "registered")
            try:
                classes = list(impl.function() or ())
            except Exception as exc:
                pm.problem(f"plugin {info.name!r}: {hookname}() failed: {type(exc).__name__}: {exc}")
                continue
            for cls in classes:
                if not (isinstance(cls, type) and issubclass(cls, STEP_BASES[verb]) and cls.id):
                    pm.problem(f"plugin {info.name!r}: {hookname}() returned {cls!r}, not a {verb} step class with an id")
                    continue
                clash = [f.name for f in dataclasses.fields(cls.Options) if f.name in VERBS]
                if clash:
                    pm.problem(f"plugin {info.name!r}: {verb} step {cls.id!r} has option(s) named "
                               f"{', '.join(clash)}, a verb key; the step is not registered")
                    continue
                step = StepInfo(cls, info)
                known = reg.steps[verb].get(cls.id)
                if known is not None and known.cls is not cls:
                    reg.conflicts.setdefault((verb, cls.id), [known]).append(step)
                else:
                    reg.steps[verb][cls.id] = step
    reg.problems = list(pm.problems)
    builtin = [name for name in BUILTINS if name in pm.info]
    reg.plugins = {name: pm.info[name] for name in builtin + [n for n in pm.info if n not in builtin]}
    return reg


def hooks_of(name: str) -> list[str]:
    """The hook names a plugin implements."""
    pm = get_manager()
    plugin = pm.get_plugin(name)
    return sorted(caller.name for caller in pm.get_hookcallers(plugin) or ())
