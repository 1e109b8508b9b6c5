"""Every recipe the docs show is one a user can run: it passes the same validation as `dcmpipe check`.

A user copies recipes from docs/examples/ and from the ```toml blocks of the docs pages; a renamed
step or option must not leave them stale.  Blocks for `dcmpipe storescp --recipe` are per-study
recipes (the receiver supplies the files): they are checked with the read step the receiver adds.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from conftest import REPO, run_cli

DOCS = REPO / "docs"
BLOCK = re.compile(r"```toml\n(.*?)```", re.S)


def _blocks():
    for page in sorted(DOCS.rglob("*.md")):
        for n, match in enumerate(BLOCK.finditer(page.read_text(encoding="utf-8")), 1):
            text = match.group(1)
            if "[[step]]" in text:
                yield pytest.param(page, text, id=f"{page.relative_to(DOCS)}#{n}")


def _destinations_of_docs() -> str:
    """The destinations file the send_dicom page shows (its recipes name those destinations)."""
    text = (DOCS / "plugins" / "send_dicom.md").read_text(encoding="utf-8")
    return "\n".join(b for b in BLOCK.findall(text) if "[destinations." in b)


@pytest.mark.parametrize("page,text", list(_blocks()))
def test_docs_recipe_blocks_validate(page, text, tmp_path, monkeypatch):
    from dcmpipe.recipe import build_recipe

    if page.name == "writing-a-plugin.md":
        pytest.skip("the plugin guide's recipes use the example plugin the page writes")
    data = tomllib.loads(text)
    steps = data.get("step", [])
    if not any("read" in step for step in steps):
        assert page.name == "storescp.md", f"{page}: a recipe without a read step"
        data["step"] = [{"read": "files", "path": [str(tmp_path)]}, *steps]
    dest = tmp_path / "destinations.toml"
    # Without its TLS lines: validation loads the lab's certificates, which the docs only name.
    dest.write_text(re.sub(r"(?m)^tls.*$", "", _destinations_of_docs()), encoding="utf-8")
    monkeypatch.setenv("DCMPIPE_DESTINATIONS", str(dest))
    build_recipe(data, tmp_path, source=str(page))


@pytest.mark.parametrize("recipe", sorted((DOCS / "examples").glob("*.toml")), ids=lambda p: p.name)
def test_example_recipes_pass_dcmpipe_check(recipe):
    result = run_cli("check", recipe)
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout + result.stderr
