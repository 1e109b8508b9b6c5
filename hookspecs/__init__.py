"""The dcmpipe plugin contract: hook specifications, nothing else.

A plugin is a module (or object) with functions marked ``@dcmpipe.hookimpl``
whose names are the hooks below.  Read this file top to bottom before writing
one; ``docs/writing-a-plugin.md`` walks through a complete example.

**Steps.**  A pipeline is a list of steps; each step is a class with an ``id``
(the name a recipe uses), an ``Options`` dataclass (the recipe keys), the
header ``tags`` it reads and the ``group`` it needs (``"item"``, ``"series"``,
``"study"`` or ``"run"``).  The six verbs of a pipeline, *read, transform,
name, route, export, send*, are six *registration* hooks: every plugin is
asked, and each returns the step classes it offers for that verb.  The host
collects them into a registry keyed by ``id`` and a recipe selects one by
name.  Two plugins offering the same id for one verb is an error that names
both.  The step base classes, with the method each verb calls per item, live
in ``dcmpipe.steps``:

=========  ====================  ===========================================
verb       base class            per-item method and what it returns
=========  ====================  ===========================================
read       ``Reader``            ``read()`` -> iterator of ``Item``
transform  ``Transform``         ``transform(item)`` -> ``Item`` or ``None``
name       ``Namer``             ``name(item)`` -> relative path (``str``)
route      ``Router``            ``route(item)`` -> destination root or None
export     ``Exporter``          ``export(item, destination)`` -> paths
send       ``Sender``            ``send(item)`` -> status text
=========  ====================  ===========================================

Beside the six verbs the host offers a hook to add CLI subcommands and
notifications about a run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:  # annotation types only: importing this module stays cheap
    import click

    from dcmpipe.runner import Summary
    from dcmpipe.steps import (
        Context,
        Exporter,
        Item,
        Namer,
        Reader,
        Router,
        Sender,
        Transform,
    )

hookspec = pluggy.HookspecMarker("dcmpipe")


# -- the six verbs: each hook returns the step classes a plugin offers -------


@hookspec
def dcmpipe_readers() -> list[type[Reader]]:
    """Return the reader step classes this plugin offers.

    A reader turns a source (a folder, a network port, a PAR/REC file) into
    a stream of :class:`~dcmpipe.steps.Item`.  Its ``read()`` method is a
    generator; it runs in the main process and may set ``self.context.total``
    (the number of items expected) for the progress display.  A reader whose
    source never ends (a network receiver) yields
    ``GroupComplete(level, key)`` when it knows a study or series is complete,
    so that group steps can run on it.
    """


@hookspec
def dcmpipe_transforms() -> list[type[Transform]]:
    """Return the transform step classes this plugin offers.

    ``transform(item)`` returns the item (changed or not) to keep it, or
    ``None`` to drop it from the run (counted as skipped).  A transform with
    ``group = "study"`` or ``"series"`` receives ``transform_group(items)``
    instead and returns the list of items to keep.
    """


@hookspec
def dcmpipe_namers() -> list[type[Namer]]:
    """Return the namer step classes this plugin offers.

    ``name(item)`` returns the item's path relative to its destination root,
    as a string with ``/`` separators.  The host refuses absolute paths and
    ``..`` parts, whatever a tag value contains.  A namer with a group level
    receives ``name_group(items)`` and returns one name per item, in order.
    """


@hookspec
def dcmpipe_routers() -> list[type[Router]]:
    """Return the router step classes this plugin offers.

    ``route(item)`` returns the destination root folder for the item, or
    ``None`` to let the next route step of the recipe decide.  Route steps are
    asked in recipe order; the first answer wins.
    """


@hookspec
def dcmpipe_exporters() -> list[type[Exporter]]:
    """Return the exporter step classes this plugin offers.

    ``export(item, destination)`` writes the item (a DICOM file, a JSON file,
    a listing line ...) below ``destination``, the root chosen by the route
    steps (or the exporter's own option), at ``item.name``, and returns the
    paths written.  Exporters must never overwrite a different existing file:
    use :mod:`dcmpipe.safefile`.  In a dry run ``describe(item, destination)``
    is called instead and returns one line saying what would happen.
    """


@hookspec
def dcmpipe_senders() -> list[type[Sender]]:
    """Return the sender step classes this plugin offers.

    ``send(item)`` sends the item somewhere (C-STORE to a peer, ...) and
    returns a short status text; it raises an exception for a failure.
    """


# -- the host's own hooks ---------------------------------------------------


@hookspec
def dcmpipe_register_commands(cli: click.Group) -> None:
    """Add subcommands to the ``dcmpipe`` command line.

    ``cli`` is the top-level :class:`click.Group`.  Each tool command should
    build a recipe and hand it to :func:`dcmpipe.runner.run_recipe`, so that
    ``--print-recipe`` can show it.  Keep heavy imports (pydicom, numpy,
    pynetdicom) inside the command function: ``dcmpipe --help`` imports every
    plugin module.
    """


@hookspec
def dcmpipe_run_started(recipe: dict, context: Context) -> None:
    """A run is about to read its first item; ``recipe`` is validated."""


@hookspec
def dcmpipe_item_failed(item: Item, step: str | None, error: str) -> None:
    """An item failed; ``step`` names the step (``"export 'dicom'"``), None if no step did.

    ``error`` is the one-line reason also printed to the user.
    """


@hookspec
def dcmpipe_run_finished(summary: Summary, context: Context) -> None:
    """A run has ended, normally or interrupted; ``summary`` has the counts."""
