"""A small test kit for plugin authors (and dcmpipe's own suite).

::

    from dcmpipe.testing import registered, run

    def test_my_router(tmp_path):
        with registered(my_plugin_module):
            summary = run({"step": [...]}, base_dir=tmp_path)
        assert summary.exit_code == 0
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from . import registry


@contextmanager
def registered(*plugins, installed: bool = False):
    """Register throwaway plugins for the duration; always unregistered afterwards.

    ``installed=True`` also loads installed (entry point) and lab-local
    plugins, even where ``DCMPIPE_DISABLE_PLUGINS`` is set.
    """
    saved = os.environ.get("DCMPIPE_DISABLE_PLUGINS")
    if installed:
        os.environ.pop("DCMPIPE_DISABLE_PLUGINS", None)
    registry.reset()
    try:
        pm = registry.get_manager()
        names = [pm.register(plugin) for plugin in plugins]
        yield registry.get_registry()
        for name in names:
            pm.unregister(name=name)
    finally:
        if saved is not None:
            os.environ["DCMPIPE_DISABLE_PLUGINS"] = saved
        registry.reset()


def run(recipe: dict | str | Path, base_dir: Path | None = None, **options):
    """Validate and run a recipe (a dict or a TOML file) in this process; return the Summary."""
    from .recipe import build_recipe, load_recipe
    from .runner import run_recipe

    if isinstance(recipe, dict):
        loaded = build_recipe(recipe, Path(base_dir or Path.cwd()))
    else:
        loaded = load_recipe(recipe)
    options.setdefault("jobs", 1)
    return run_recipe(loaded, **options)
