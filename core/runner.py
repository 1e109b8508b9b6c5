"""Running a recipe: items stream from the readers through the steps.

The steps after the readers are cut into *stages*: a run of item-level steps
is one stage, and each step that needs a whole series, study or run is a
stage of its own.  Items stream through item stages one by one; a group stage
collects its groups (until the readers are done, or a reader says a group is
complete) and then hands each group over at once.

The first stage also reads each item's header, once, with the union of the
tags every step declared.  With ``jobs`` N > 1 it runs in a pool of N - 1
worker processes while this process walks, groups and writes (N processes in
all; header parsing is the cost of sorting), as does any later stage holding a
step marked ``parallel``; the rest run in the main process.

Ctrl-C stops reading new items; the items in flight finish (a file is never
left half-written) and the summary says the run was interrupted.  A second
Ctrl-C aborts at once (still no half-written file: see dcmpipe.safefile).
"""

from __future__ import annotations

import collections
import gc
import logging
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DcmpipeError
from .naming import check_relative
from .recipe import Recipe, StepSpec
from .steps import Context, GroupComplete, Item, Skip, chunked, tag_of

log = logging.getLogger("dcmpipe")
CHUNK = 64


@dataclass
class Summary:
    """What a run did, counted per item."""

    read: int = 0
    written: int = 0
    sent: int = 0
    skipped: int = 0
    bad: int = 0
    failed: int = 0
    unhandled_bad: int = 0
    interrupted: bool = False
    seconds: float = 0.0
    failures: list = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if (self.failed or self.unhandled_bad) else 0

    def line(self, dry_run: bool = False) -> str:
        rate = f", {self.read / self.seconds:,.0f} items/s" if self.seconds > 0 and self.read else ""
        parts = [f"{self.read} read"]
        parts.append(f"{self.written} {'to write' if dry_run else 'written'}")
        if self.sent:
            parts.append(f"{self.sent} sent")
        parts += [f"{self.skipped} skipped", f"{self.bad} bad", f"{self.failed} failed"]
        tail = " (interrupted)" if self.interrupted else ""
        return f"{'dry run: ' if dry_run else ''}{', '.join(parts)} in {self.seconds:.1f} s{rate}{tail}"

    def count(self, item: Item) -> None:
        handled = bool(item.outputs or item.extra.get("planned") or item.extra.get("handled"))
        if item.status == "failed":
            self.failed += 1
            if len(self.failures) < 1000:
                self.failures.append((str(item), item.reason))
        elif item.status == "bad":
            self.bad += 1
            self.unhandled_bad += not handled
        elif item.status == "skipped":
            self.skipped += 1
        elif handled:
            self.written += 1
        self.sent += bool(item.extra.get("sent"))


# -- applying steps to items -------------------------------------------------


def _fail(item: Item, spec: StepSpec, exc: BaseException, debug: bool) -> None:
    item.status = "failed"
    if isinstance(exc, DcmpipeError):
        item.reason = str(exc)
    elif isinstance(exc, OSError):
        names = [str(n) for n in (exc.filename, exc.filename2) if n]
        item.reason = f"{exc.strerror or exc}" + (f": {' -> '.join(names)}" if names else "")
    else:
        item.reason = f"{type(exc).__name__}: {exc}"
    item.reason = f"{spec.verb} {spec.id!r}: {item.reason}"
    item.extra["failed_step"] = f"{spec.verb} {spec.id!r}"
    if debug:
        item.extra["traceback"] = traceback.format_exc()


def apply_step(spec: StepSpec, step, item: Item, context: Context, debug: bool = False) -> Item:
    """Apply one item-level step; the item records success, skip or failure."""
    if spec.verb in ("export", "send") and item.extra.get("hold") and item.status in ("ok", "bad"):
        item.status, item.reason = "skipped", item.extra["hold"]
        return item
    if not item.ok and not (item.status == "bad" and spec.cls.accepts_bad):
        return item
    if item.status == "bad":
        item.extra["handled"] = True  # a step that knows what to do with non-DICOM files saw it
    try:
        verb = spec.verb
        if verb == "transform":
            out = step.transform(item)
            if out is None:
                item.status, item.reason = "skipped", item.reason or f"dropped by {spec.id}"
                return item
            return out
        if verb == "name":
            item.name = str(check_relative(step.name(item)))
        elif verb == "route":
            if item.destination is None:
                where = step.route(item)
                item.destination = Path(where) if where is not None else None
        elif verb == "export":
            if context.dry_run:
                item.extra.setdefault("plan", []).append(step.describe(item, item.destination))
                item.extra["planned"] = True
            else:
                item.outputs.extend(step.export(item, item.destination) or ())
        elif verb == "send":
            if context.dry_run:
                item.extra.setdefault("plan", []).append(step.describe(item))
            else:
                item.extra.setdefault("plan", []).append(step.send(item))
                item.extra["sent"] = True
    except Skip as exc:
        item.status, item.reason = "skipped", str(exc)
    except Exception as exc:  # one item's failure never stops the run
        _fail(item, spec, exc, debug)
    return item


def apply_group(spec: StepSpec, step, items: list[Item], context: Context, debug: bool) -> list[Item]:
    """Apply a group-level step to the items of one series, study or run."""
    try:
        if spec.verb == "transform":
            kept = step.transform_group(items)
            kept_ids = {id(i) for i in kept}
            for item in items:
                if id(item) not in kept_ids and item.ok:
                    item.status, item.reason = "skipped", item.reason or f"dropped by {spec.id}"
            return items
        if spec.verb == "name":
            for item, name in zip(items, step.name_group(items), strict=True):
                if isinstance(name, Skip):
                    item.status, item.reason = "skipped", str(name)
                elif isinstance(name, Exception):
                    try:
                        raise name
                    except Exception as exc:
                        _fail(item, spec, exc, debug)
                else:
                    try:
                        item.name = str(check_relative(name))
                    except DcmpipeError as exc:
                        _fail(item, spec, exc, debug)
            return items
        step.start_group([item for item in items if item.ok])
    except Exception as exc:
        for item in items:
            if item.ok:
                _fail(item, spec, exc, debug)
        return items
    return [apply_step(spec, step, item, context, debug) for item in items]


# -- worker processes ----------------------------------------------------------

_W: dict = {}


def _worker_init(recipe: Recipe, context: Context, tags, debug: bool) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from multiprocessing.util import Finalize

    steps = _instantiate(recipe, context, lambda spec: spec.cls.group == "item")
    _W.update(steps=steps, context=context, tags=tags, debug=debug, specs={s.index: s for s in recipe.workers})
    Finalize(None, _close_steps, args=(steps,), exitpriority=10)


def _process(load: bool, indexes: tuple, chunk: list, steps, specs, context, tags, debug) -> list:
    out = []
    for item in chunk:
        if isinstance(item, Item):
            if load:
                item.load_header(tags)
            for index in indexes:
                item = apply_step(specs[index], steps[index], item, context, debug)
        out.append(item)
    return out


def _worker_run(task) -> list:
    load, indexes, chunk = task
    return _process(load, indexes, chunk, _W["steps"], _W["specs"], _W["context"], _W["tags"], _W["debug"])


def _instantiate(recipe: Recipe, context: Context, want) -> dict:
    return {spec.index: spec.cls(spec.options, context) for spec in recipe.workers if want(spec)}


def _close_steps(steps: dict) -> None:
    for step in steps.values():
        try:
            step.close()
        except Exception as exc:  # closing must not hide the run's result
            log.warning("closing %s failed: %s", step.id, exc)


# -- the run -------------------------------------------------------------------


def wanted_tags(recipe: Recipe) -> frozenset[int] | None:
    tags: set[int] = {tag_of("StudyInstanceUID"), tag_of("SeriesInstanceUID"), tag_of("SOPInstanceUID")}
    for spec in recipe.steps:
        if spec.cls.tags is None:
            return None
        tags.update(tag_of(t) for t in spec.cls.tags)
    return frozenset(tags)


def _stages(recipe: Recipe) -> list:
    stages, current = [], []
    for spec in recipe.workers:
        if spec.cls.group != "item":
            stages.append(("items", current))
            stages.append(("group", spec))
            current = []
        elif spec.cls.main_process and not stages:
            # The first stage runs in worker processes: a main-process step starts the next one.
            stages.append(("items", current))
            current = [spec]
        else:
            current.append(spec)
    stages.append(("items", current))
    return [s for i, s in enumerate(stages) if i == 0 or s != ("items", [])]


class _LazySteps(dict):
    """Step instances of this process, built on first use (index -> step)."""

    def __init__(self, specs: dict, context: Context):
        super().__init__()
        self.specs, self.context = specs, context

    def __missing__(self, index):
        spec = self.specs[index]
        step = self[index] = spec.cls(spec.options, self.context)
        return step


class _Done:
    """A chunk that needs no worker, in the queue of pending results."""

    def __init__(self, chunk):
        self.chunk = chunk

    def get(self):
        return self.chunk


class _Interrupt:
    """First Ctrl-C: stop reading, finish what is in flight.  Second: abort."""

    def __init__(self, context: Context):
        self.context = context
        self.previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self.handle)
        return self

    def handle(self, signum, frame):
        if self.context.stopping:
            raise KeyboardInterrupt
        self.context.stopping = True
        log.warning("stopping after the items in progress (Ctrl-C again to abort)")

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False


def run_recipe(
    recipe: Recipe,
    *,
    dry_run: bool = False,
    jobs: int | None = None,
    progress: bool | None = None,
    debug: bool = False,
    out=None,
    summary: Summary | None = None,
    on_item=None,
    stop: threading.Event | None = None,
) -> Summary:
    """Run a validated recipe and return its summary.

    ``jobs``: processes sharing the work, this one included (default: the
    number of cores; 1 runs everything in this process, N > 1 adds N - 1
    workers for the header stage and parallel steps).  ``progress``: show a progress
    line on stderr (default: when stderr is a terminal).  In a dry run the
    plan of every item is printed to ``out`` (default stdout) and nothing is
    written.

    For a program driving the run from another thread (a GUI): ``summary``
    is filled in as items finish, so its counts can be read while the run
    goes on; ``on_item(item)`` is called in this process with each finished
    item; setting ``stop`` stops the run like a first Ctrl-C (the items in
    flight finish, nothing is left half-written).
    """
    from . import registry
    from .progress import Progress

    out = out or sys.stdout
    jobs = max(1, jobs if jobs is not None else (os.cpu_count() or 1))
    context = Context(base_dir=recipe.base_dir, dry_run=dry_run, interactive=sys.stdin.isatty() if sys.stdin else False)
    tags = wanted_tags(recipe)
    summary = summary if summary is not None else Summary()
    started = time.perf_counter()
    hook = registry.get_manager(builtins=()).hook  # the run hooks: no built-in beyond the recipe's is needed
    readers = [spec.cls(spec.options, context) for spec in recipe.readers]
    specs = {spec.index: spec for spec in recipe.workers}
    local = _LazySteps(specs, context)  # steps that only run in workers are never built here
    stages = _stages(recipe)
    pool = None
    needs_pool = jobs > 1 and any(
        kind == "items" and (n == 0 or any(s.cls.parallel for s in body)) for n, (kind, body) in enumerate(stages)
    )
    bar = Progress(enabled=(sys.stderr.isatty() if progress is None else progress) and not dry_run)
    hook.dcmpipe_run_started(recipe=recipe.data, context=context)

    def source():
        for reader in readers:
            for thing in reader.read():
                if isinstance(thing, Item):
                    summary.read += 1
                    bar.total = context.total
                yield thing
                if stop is not None and stop.is_set():
                    context.stopping = True
                if context.stopping:
                    return

    def item_stage(stream, body, load, parallel):
        indexes = tuple(s.index for s in body)
        if not parallel:
            for thing in stream:
                if context.stopping and isinstance(thing, Item) and thing.ok:
                    thing.status, thing.reason = "skipped", "run interrupted"
                    yield thing
                    continue
                yield from _process(load, indexes, [thing], local, specs, context, tags, debug)
            return
        # Tasks are submitted from this (the consuming) thread, a bounded window ahead, so that
        # several pool stages can follow one another without waiting on the pool's feeder thread.
        pending: collections.deque = collections.deque()
        for chunk in chunked(stream, CHUNK):
            if context.stopping:
                for thing in chunk:
                    if isinstance(thing, Item) and thing.ok:
                        thing.status, thing.reason = "skipped", "run interrupted"
                pending.append(_Done(chunk))
            else:
                pending.append(pool.apply_async(_worker_run, ((load, indexes, chunk),)))
            while len(pending) > jobs * 3:
                yield from pending.popleft().get()
        while pending:
            yield from pending.popleft().get()

    def group_stage(stream, spec):
        level, step = spec.cls.group, local[spec.index]
        buffers: dict = {}
        for thing in stream:
            if isinstance(thing, GroupComplete):
                n = len(thing.key)
                done = [k for k in buffers if len(k) >= n and k[:n] == thing.key]
                for key in done:
                    yield from apply_group(spec, step, buffers.pop(key), context, debug)
                yield thing
            elif not thing.ok:
                yield thing
            else:
                buffers.setdefault(thing.group_key(level), []).append(thing)
        for items in buffers.values():
            if context.stopping:
                for item in items:
                    item.status, item.reason = "skipped", "run interrupted before this group"
                yield from items
            else:
                yield from apply_group(spec, step, items, context, debug)

    # Thousands of live items make every full garbage collection slow; they hold no cycles.
    gc_threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(gc_threshold[0], 50_000), *gc_threshold[1:])
    try:
        with _Interrupt(context):
            if needs_pool:
                import multiprocessing as mp

                method = "fork" if "fork" in mp.get_all_start_methods() else None
                pool = mp.get_context(method).Pool(jobs - 1, _worker_init, (recipe, context, tags, debug))
            stream = source()
            for n, (kind, body) in enumerate(stages):
                if kind == "items":
                    parallel = pool is not None and (n == 0 or (any(s.cls.parallel for s in body)
                                                                and not any(s.cls.main_process for s in body)))
                    stream = item_stage(stream, body, n == 0, parallel)
                else:
                    stream = group_stage(stream, body)
            finished = 0
            for item in stream:
                if not isinstance(item, Item):
                    continue
                _report(item, summary, context, hook, out)
                finished += 1
                bar.update(finished, summary.read)
                if on_item is not None:
                    on_item(item)
                if stop is not None and stop.is_set():
                    context.stopping = True
            summary.interrupted = context.stopping
    except KeyboardInterrupt:
        summary.interrupted = True
        if pool is not None:
            pool.terminate()
            pool = None
    finally:
        gc.set_threshold(*gc_threshold)
        gc.unfreeze()
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()
        _close_steps(local)
        for reader in readers:
            reader.close()
        summary.seconds = time.perf_counter() - started
    hook.dcmpipe_run_finished(summary=summary, context=context)
    return summary


def _report(item: Item, summary: Summary, context: Context, hook, out) -> None:
    summary.count(item)
    if item.status == "failed":
        log.error("%s: %s", item, item.reason)
        if "traceback" in item.extra:
            log.error("%s", item.extra["traceback"].rstrip())
        hook.dcmpipe_item_failed(item=item, step=item.extra.get("failed_step"), error=item.reason)
    elif item.status == "bad" and not item.extra.get("handled"):
        log.error("%s: %s", item, item.reason)
    elif item.status == "skipped":
        log.info("%s: skipped: %s", item, item.reason)
    if context.dry_run:
        for line in item.extra.get("plan", ()):
            print(line, file=out)
        if item.status != "ok" and not item.extra.get("plan"):
            print(f"{item.status}: {item} ({item.reason})", file=out)
    else:
        for line in item.extra.get("log", ()):
            log.info("%s", line)
