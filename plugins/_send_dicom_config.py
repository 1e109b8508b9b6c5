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
    tls = true                  # optional: TLS, the peer verified against tls_ca
    tls_ca = "lab-ca.pem"       # (paths relative to this file)
    tls_cert = "me.pem"         # our certificate and key, for peers that ask
    tls_key = "me.key"

The file is ``$XDG_CONFIG_HOME/dcmpipe/destinations.toml`` (by default
``~/.config/dcmpipe/destinations.toml``), or the one ``$DCMPIPE_DESTINATIONS``
or ``--config FILE`` names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

KEYS = {"host": str, "port": int, "aetitle": str, "local_aetitle": str, "max_delay": (int, float),
        "retries": int, "timeout": (int, float), "tls": bool, "tls_ca": str, "tls_cert": str, "tls_key": str}
_PATHS = ("tls_ca", "tls_cert", "tls_key")


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
    tls: bool = False
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None

    def tls_context(self):
        """The TLS client context, or None without TLS."""
        if not self.tls:
            return None
        from dcmpipe.plugins._send_dicom_net import tls_context

        return tls_context(self.tls_ca, self.tls_cert, self.tls_key)

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
            elif not isinstance(value, KEYS[key]) or (isinstance(value, bool) and KEYS[key] is not bool):
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
    values = {key: getattr(options, key) for key in KEYS}
    name = options.destination
    if name:
        file, tables = load_destinations(options.config)
        if name not in tables:
            known = ", ".join(sorted(tables)) or "none"
            raise ValueError(f"option 'destination': no destination {name!r} in {file} (known: {known})")
        merged = dict(tables[name])
        for key in _PATHS:  # relative to the destinations file
            if key in merged:
                merged[key] = str((file.parent / Path(merged[key]).expanduser()).resolve())
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
    paths = {key: (str(values[key]) if values[key] else None) for key in _PATHS}
    if any(paths.values()) and not values["tls"]:
        raise ValueError("tls_ca, tls_cert and tls_key need tls = true")
    if paths["tls_key"] and not paths["tls_cert"]:
        raise ValueError("tls_key needs tls_cert")
    missing = [f"{key} {path}" for key, path in paths.items() if path and not Path(path).is_file()]
    if missing:
        raise ValueError("no such file: " + ", ".join(missing))
    target = Target(host=str(values["host"]), port=int(values["port"]), aetitle=str(values["aetitle"]),
                    local_aetitle=str(values["local_aetitle"]), max_delay=float(values["max_delay"]),
                    retries=int(values["retries"]), timeout=float(values["timeout"]), name=name,
                    tls=bool(values["tls"]), **paths)
    if target.tls:
        import ssl

        try:
            target.tls_context()  # the certificate files are read now, not at the first send
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"TLS files {', '.join(p for p in paths.values() if p) or '(system CAs)'}: "
                             f"{getattr(exc, 'reason', None) or exc}") from None
    return target
