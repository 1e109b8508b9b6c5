"""Loading plugins and collecting their steps into a registry.

Three sources, in this order:

1. the built-in tools, from the explicit list ``BUILTINS``;
2. installed third-party plugins, from the entry-point group ``dcmpipe``;
3. lab-local rule files: every ``*.py`` in ``$DCMPIPE_PLUGINS_DIR`` (default
   ``~/.config/dcmpipe/plugins``).

A plugin that fails to load is reported in one line and skipped; the others
keep working, and a recipe that needs the missing step fails with the reason.
``DCMPIPE_DISABLE_PLUGINS=1`` loads the built-ins only (the test suite sets it).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pluggy

from . import __version__
from .errors import PluginError
from .steps import STEP_BASES, VERBS

log = logging.getLogger("dcmpipe")



# The built-in tools, in loading order. An explicit list (as pytest, datasette and llm keep
# theirs): a stray file in the installed package never becomes a plugin, and loading is the same
# on every machine. tests/test_host.py checks that every public module of plugins/ is listed;
# modules named ``_*.py`` are helpers shared by the tools of one family, not plugins.
BUILTINS = (
    "dcmpipe.plugins.files",
    "dcmpipe.plugins.dcm_move",
    "dcmpipe.plugins.movegui",
    "dcmpipe.plugins.dcm2json",
    "dcmpipe.plugins.json2dcm",
    "dcmpipe.plugins.storescp",
    "dcmpipe.plugins.send_dicom",
    "dcmpipe.plugins.dcmls",
    "dcmpipe.plugins.dcminfo",
    "dcmpipe.plugins.dcm2par",
    "dcmpipe.plugins.parrec",
    "dcmpipe.plugins.dcms2e",
    "dcmpipe.plugins.dicomeread",
    "dcmpipe.plugins.dcm2btable",
    "dcmpipe.plugins.dcmshortacq",
    "dcmpipe.plugins.dcmexamcard",
    "dcmpipe.plugins.dcmcleanup",
)


def builtins() -> tuple[str, ...]:
    """The built-in plugin modules, in loading order."""
    return BUILTINS


ENTRY_POINT_GROUP = "dcmpipe"
HOOK_OF_VERB = {
    "read": "dcmpipe_readers",
    "transform": "dcmpipe_transforms",
    "name": "dcmpipe_namers",
    "route": "dcmpipe_routers",
    "export": "dcmpipe_exporters",
    "send": "dcmpipe_senders",
}


@dataclass(frozen=True)
class PluginInfo:
    name: str
    dist: str
    version: str
    origin: str  # "builtin", "entry point", or the local file's path


@dataclass(frozen=True)
class StepInfo:
    cls: type
    plugin: PluginInfo


@dataclass
class Registry:
    """Every step class offered, by verb and id, and what went wrong loading."""

    steps: dict = field(default_factory=lambda: {verb: {} for verb in VERBS})
    conflicts: dict = field(default_factory=dict)  # (verb, id) -> [StepInfo, ...]
    problems: list = field(default_factory=list)
    plugins: dict = field(default_factory=dict)  # plugin name -> PluginInfo

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
    def __init__(self):
        super().__init__("dcmpipe")
        from dcmpipe import hookspecs

        self.add_hookspecs(hookspecs)
        self.spec_names = {name for name in dir(hookspecs) if name.startswith("dcmpipe_")}
        self.info: dict[str, PluginInfo] = {}
        self.problems: list[str] = []

    def add(self, module, info: PluginInfo) -> None:
        try:
            self.register(module, name=info.name)
        except ValueError as exc:  # a second plugin under the same name
            self.problems.append(f"plugin {info.name!r} ({info.origin}) not loaded: {exc}")
            return
        self.info[info.name] = info
        unknown = [name for name in dir(module) if name.startswith("dcmpipe_")
                   and callable(getattr(module, name)) and name not in self.spec_names]
        if unknown:
            self.problems.append(f"plugin {info.name!r}: {', '.join(unknown)} matches no dcmpipe hook (misspelled?)")


def _load_builtins(pm: _Manager) -> None:
    for modname in builtins():
        name = modname.rsplit(".", 1)[-1]
        try:
            module = importlib.import_module(modname)
        except Exception as exc:  # one broken tool must not take the others down
            pm.problems.append(f"built-in plugin {name!r} failed to load: {type(exc).__name__}: {exc}")
            continue
        pm.add(module, PluginInfo(name, "dcmpipe", __version__, "builtin"))


def _load_entry_points(pm: _Manager) -> None:
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        info = PluginInfo(ep.name, dist.name if dist else "?", dist.version if dist else "?", "entry point")
        try:
            module = ep.load()
        except Exception as exc:  # a broken plugin must not take the host down
            pm.problems.append(f"plugin {ep.name!r} ({info.dist}) failed to load: {type(exc).__name__}: {exc}")
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
            pm.problems.append(f"local plugin {path} failed to load: {type(exc).__name__}: {exc}")
            continue
        pm.add(module, info)


_manager: _Manager | None = None
_registry: Registry | None = None


def get_manager() -> _Manager:
    """The process's plugin manager, loaded on first use."""
    global _manager
    if _manager is None:
        pm = _Manager()
        _load_builtins(pm)
        if not os.environ.get("DCMPIPE_DISABLE_PLUGINS"):
            _load_entry_points(pm)
            _load_local(pm)
        for problem in pm.problems:
            log.warning(problem)
        _manager = pm
    return _manager


def reset() -> None:
    """Forget loaded plugins (tests register throwaway plugins, then reset)."""
    global _manager, _registry
    _manager = _registry = None


def get_registry() -> Registry:
    """Collect every plugin's steps (broadcast), keyed by verb and id."""
    global _registry
    if _registry is not None:
        return _registry
    pm = get_manager()
    reg = Registry(problems=list(pm.problems), plugins=dict(pm.info))
    for verb, hookname in HOOK_OF_VERB.items():
        for impl in getattr(pm.hook, hookname).get_hookimpls():
            info = pm.info.get(impl.plugin_name) or PluginInfo(impl.plugin_name, "?", "?", "registered")
            try:
                classes = list(impl.function() or ())
            except Exception as exc:
                reg.problems.append(f"plugin {info.name!r}: {hookname}() failed: {type(exc).__name__}: {exc}")
                continue
            for cls in classes:
                if not (isinstance(cls, type) and issubclass(cls, STEP_BASES[verb]) and cls.id):
                    reg.problems.append(f"plugin {info.name!r}: {hookname}() returned {cls!r}, not a {verb} step class with an id")
                    continue
                clash = [f.name for f in dataclasses.fields(cls.Options) if f.name in VERBS]
                if clash:
                    reg.problems.append(f"plugin {info.name!r}: {verb} step {cls.id!r} has option(s) named "
                                        f"{', '.join(clash)}, a verb key; the step is not registered")
                    continue
                step = StepInfo(cls, info)
                known = reg.steps[verb].get(cls.id)
                if known is not None and known.cls is not cls:
                    reg.conflicts.setdefault((verb, cls.id), [known]).append(step)
                else:
                    reg.steps[verb][cls.id] = step
    for problem in reg.problems[len(pm.problems):]:
        log.warning(problem)
    _registry = reg
    return reg


def hooks_of(name: str) -> list[str]:
    """The hook names a plugin implements."""
    pm = get_manager()
    plugin = pm.get_plugin(name)
    return sorted(caller.name for caller in pm.get_hookcallers(plugin) or ())
