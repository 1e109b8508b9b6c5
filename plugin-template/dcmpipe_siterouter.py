"""dcmpipe-siterouter: send each study to a site's folder by a prefix rule.

A template for dcmpipe plugins: copy this project, rename it (see README.md)
and replace the step below with your own.

The plugin offers one route step, ``site-rules``.  Its rules are
``"PREFIX=folder"`` entries, asked in order: the first whose PREFIX starts
the item's Study Description (or Referring Physician's Name, option
``field``), ignoring case, sends the item to ``root/folder``.  An item that
matches no rule goes to ``root/default``, or, when ``default`` is empty, to
whatever the next route step of the recipe decides::

    [[step]]
    route = "site-rules"
    root = "sorted"
    rules = ["NEURO=neuro", "CARDIAC=cardiac"]

    [[step]]
    route = "fixed"            # studies that match no rule
    dest = "sorted/other"

Module-level imports stay cheap (no pydicom): ``dcmpipe --help`` imports
every installed plugin.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dcmpipe import Router, hookimpl, option

_PLAIN_NAME = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9._+-]*")


def check_folder(folder: str) -> str | None:
    """Why ``folder`` cannot be a site folder, or None if it can.

    A site folder is a relative path of plain names joined by ``/``: letters,
    digits and ``._+-``, no name starting with a dot.  So it can never be
    absolute or climb out of ``root`` with ``..``.  (A folder name made from a
    *tag value* would go through :func:`dcmpipe.naming.component` instead.)
    """
    if not folder:
        return "is empty"
    if not all(_PLAIN_NAME.fullmatch(part) for part in folder.split("/")):
        return ("must be plain names joined by '/' (letters, digits and ._+-, not starting with a dot): "
                "no absolute path, no '..'")
    return None


def parse_rules(rules: list[str]) -> list[tuple[str, str]]:
    """``["NEURO=neuro", ...]`` as ``[("neuro", "neuro"), ...]`` (prefix case-folded).

    Raises ValueError listing every bad entry: no ``=``, an empty prefix, an
    unsafe folder, or a rule that can never match because an earlier rule's
    prefix already covers it.
    """
    parsed: list[tuple[str, str]] = []
    problems = [] if rules else ["no rules: give at least one PREFIX=folder, e.g. 'NEURO=neuro'"]
    for number, rule in enumerate(rules, start=1):
        prefix, sep, folder = rule.rpartition("=")
        prefix, folder = prefix.strip(), folder.strip()
        if not sep:
            problems.append(f"rule {number} {rule!r} has no '=': write PREFIX=folder, e.g. 'NEURO=neuro'")
            continue
        if not prefix:
            problems.append(f"rule {number} {rule!r} has an empty prefix; use option 'default' for studies "
                            "that match no rule")
            continue
        why = check_folder(folder)
        if why:
            problems.append(f"rule {number} {rule!r}: folder {folder!r} {why}")
            continue
        key = prefix.casefold()
        earlier = next((n for n, (p, _) in enumerate(parsed, start=1) if key.startswith(p)), None)
        if earlier is not None:
            problems.append(f"rule {number} {rule!r} can never match: rule {earlier} {rules[earlier - 1]!r} "
                            "matches first (put longer prefixes first)")
            continue
        parsed.append((key, folder))
    if problems:
        raise ValueError("option 'rules': " + "; ".join(problems))
    return parsed


@dataclass(frozen=True)
class SiteRulesOptions:
    root: Path = option(help="folder that holds the site folders (relative to the recipe's folder)")
    rules: list[str] = option(help="'PREFIX=folder' entries, asked in order; the first whose PREFIX starts "
                                   "the field's value (ignoring case) sends the study to root/folder")
    field: Literal["StudyDescription", "ReferringPhysicianName"] = option(
        "StudyDescription", help="the header element the prefixes are matched against")
    default: str = option("", help="folder below root for studies that match no rule; empty: the next "
                                   "route step of the recipe decides")

    def __post_init__(self):  # the host reports these with the step's place in the recipe
        problems = []
        try:
            parse_rules(self.rules)
        except ValueError as exc:
            problems.append(str(exc))
        why = check_folder(self.default) if self.default else None
        if why:
            problems.append(f"option 'default': folder {self.default!r} {why}")
        if problems:
            raise ValueError("; ".join(problems))


class SiteRules(Router):
    """Send studies to root/<folder> by the first 'PREFIX=folder' rule that matches."""

    id = "site-rules"
    Options = SiteRulesOptions
    tags = ("StudyDescription", "ReferringPhysicianName")

    def __init__(self, options, context):
        super().__init__(options, context)
        self.rules = parse_rules(options.rules)

    def route(self, item):
        value = item.get(self.options.field)
        if isinstance(value, (list, tuple)):  # a multi-valued element: its first value
            value = value[0] if value else None
        text = str(value or "").strip().casefold()
        for prefix, folder in self.rules:
            if text.startswith(prefix):
                return self.options.root / folder
        if self.options.default:
            return self.options.root / self.options.default
        return None


@hookimpl
def dcmpipe_routers():
    return [SiteRules]
