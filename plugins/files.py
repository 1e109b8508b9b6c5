"""files: read DICOM (and other) files from folders.

Every regular file found becomes an item; whether it is DICOM is decided when
its header is read, so that non-DICOM files can be reported or put aside.
Hidden files (names starting with ``.``) are never read: dcmpipe's own
temporary files are hidden.  A file modified less than ``settle`` seconds ago
may still be arriving from a scanner: it is *held* (``item.extra["hold"]``):
its header is read and it belongs to its series, but the host never exports
or sends it, so the next run takes it (and a series namer can hold back the
whole incomplete series).
"""

from __future__ import annotations

import fnmatch
import os
import time
from dataclasses import dataclass
from pathlib import Path

from dcmpipe import Item, Reader, hookimpl, option


@dataclass(frozen=True)
class FilesOptions:
    path: list[Path] = option(help="files or folders to read (relative to the recipe's folder)")
    recursive: bool = option(False, help="descend into subfolders")
    settle: float = option(5.0, help="leave files modified less than this many seconds ago for the next run")
    exclude: list[str] = option(factory=list, help="file or folder names (glob patterns) to pass over")
    prune: list[Path] = option(factory=list, help="folders not to enter (for example the destination's bad/)")


class Files(Reader):
    """Files from folders: each file an item, DICOM or not."""

    id = "files"
    Options = FilesOptions

    def _walk(self, root: Path):
        excluded = self.options.exclude
        pruned = {str(p) for p in self.options.prune}
        stack = [root]
        while stack:
            folder = stack.pop()
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError as exc:
                self.context.log.error("%s: cannot list folder: %s", folder, exc.strerror)
                continue
            subfolders = []
            for entry in entries:
                if entry.name.startswith(".") or any(fnmatch.fnmatch(entry.name, p) for p in excluded):
                    continue
                try:
                    if entry.is_dir():
                        if self.options.recursive and entry.path not in pruned:
                            subfolders.append(Path(entry.path))
                    elif entry.is_file():
                        yield entry.path  # a str: a DirEntry would keep ~1 kB per file alive
                except OSError:
                    continue
            stack.extend(reversed(subfolders))

    def read(self):
        found = []
        for root in self.options.path:
            if root.is_dir():
                found += [(root, entry) for entry in self._walk(root)]
            elif root.is_file():
                found.append((root.parent, str(root)))
            else:
                found.append((root.parent, str(root)))  # reported as failed below
        self.context.total = len(found)
        now = time.time()
        fresh = 0
        for root, entry in found:  # entry: the file's path as a str
            text = entry
            base = str(root)
            relpath = text[len(base) + 1:] if text.startswith(base + os.sep) else os.path.relpath(text, base)
            item = Item(source=Path(text), extra={"relpath": relpath, "root": base})
            try:
                age = now - os.stat(text).st_mtime
            except OSError as exc:
                item.status, item.reason = "failed", exc.strerror or str(exc)
                yield item
                continue
            if age < self.options.settle:
                # Held: read and grouped like the others (its series knows it is incomplete),
                # but never exported or sent in this run.
                item.extra["hold"] = f"modified {max(age, 0):.1f} s ago, may still be arriving; left for the next run"
                fresh += 1
            yield item
        if fresh:
            self.context.log.warning(
                "%d file%s modified less than %g s ago (still arriving?) left for the next run",
                fresh, "s" if fresh > 1 else "", self.options.settle)


@hookimpl
def dcmpipe_readers():
    return [Files]
