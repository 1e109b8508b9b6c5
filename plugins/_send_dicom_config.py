"""Named DICOM destinations for send_dicom: a TOML file of ``[destinations.NAME]`` tables.

::

    [destinations.scanner1]
    host = "10.0.0.5"
    port = 104
    aetitle = "SCANNER1"        # the peer's (called) AE title
    local_aetitle = "DCMPIPE"   # optional: ours (calling)
    max_delay = 0.5             # optional: the other send options
    retries = 3
    timeout = 30

The file is ``$XDG_CONFIG_HOME/dcmpipe/destinations.toml`` (by default
``~/.config/dcmpipe/destinations.toml``), or the one ``$DCMPIPE_DESTINATIONS``
or ``--config FILE`` names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

KEYS = {"host": str, "port": int, "aetitle": str, "local_aetitle": str, "max_delay": (int, float),
        "retries": int, "timeout": (int, float)}


@dataclass(frozen=True)
class Target:
    """Where and how to send: the resolved destination."""

    host: str
    port: int
    aetitle: str
    local_aetitle: str
    max_delay: float
    retries: int
    timeout: float
    name: str = ""

    def __str__(self) -> str:
        where = f"{self.aetitle}@{self.host}:{self.port}"
        return f"{self.name} ({where})" if self.name else where


def default_config() -> Path:
    if os.environ.get("DCMPIPE_DESTINATIONS"):
        return Path(os.environ["DCMPIPE_DESTINATIONS"]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "dcmpipe" / "destinations.toml"


def load_destinations(path: Path | None) -> tuple[Path, dict]:
    """``(file, {name: table})``; a missing default file is an empty list, a bad file a ValueError."""
    import tomllib

    file = Path(path).expanduser() if path else default_config()
    if not file.is_file():
        if path:
            raise ValueError(f"destinations file {file} does not exist")
        return file, {}
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{file}: cannot read the destinations: {exc}") from None
    tables = data.get("destinations", {})
    if not isinstance(tables, dict) or any(not isinstance(t, dict) for t in tables.values()):
        raise ValueError(f"{file}: 'destinations' must hold [destinations.NAME] tables")
    problems = []
    for name, table in tables.items():
        for key, value in table.items():
            if key not in KEYS:
                problems.append(f"[destinations.{name}]: unknown key {key!r} (known: {', '.join(KEYS)})")
            elif not isinstance(value, KEYS[key]) or isinstance(value, bool):
                problems.append(f"[destinations.{name}]: {key} = {value!r} has the wrong type")
        for key in ("host", "port"):
            if key not in table:
                problems.append(f"[destinations.{name}]: '{key}' is missing")
    if problems:
        raise ValueError(f"{file}: " + "; ".join(problems))
    return file, tables


def resolve(options) -> Target:
    """The target of send options: a named destination, overridden by options set away from their defaults."""
    import dataclasses

    defaults = {f.name: f.default for f in dataclasses.fields(options)}
    values = {key: getattr(options, key) for key in ("host", "port", "aetitle", "local_aetitle", "max_delay",
                                                     "retries", "timeout")}
    name = options.destination
    if name:
        file, tables = load_destinations(options.config)
        if name not in tables:
            known = ", ".join(sorted(tables)) or "none"
            raise ValueError(f"option 'destination': no destination {name!r} in {file} (known: {known})")
        merged = dict(tables[name])
        merged.update({k: v for k, v in values.items() if v != defaults[k]})
        values = {**values, **merged}
    if not values["host"] or not values["port"]:
        raise ValueError("give a 'destination', or 'host' and 'port'")
    if not 0 < int(values["port"]) < 65536:
        raise ValueError(f"port {values['port']} is not between 1 and 65535")
    for key in ("aetitle", "local_aetitle"):
        title = str(values[key])
        if not title.strip() or len(title) > 16 or not title.isascii() or "\\" in title:
            raise ValueError(f"{key} {title!r} must be 1 to 16 ASCII characters without backslash")
    if values["max_delay"] < 0 or values["retries"] < 0 or values["timeout"] <= 0:
        raise ValueError("max_delay and retries cannot be negative, timeout must be positive")
    return Target(host=str(values["host"]), port=int(values["port"]), aetitle=str(values["aetitle"]),
                  local_aetitle=str(values["local_aetitle"]), max_delay=float(values["max_delay"]),
                  retries=int(values["retries"]), timeout=float(values["timeout"]), name=name)
