"""The configuration a gateway starts with, in its audit trail (docs/architecture.md, "Audit
trail").

At every start the effective settings (file, environment and defaults together) are compared
with those of the last start, kept in ``DATA_DIR/config-applied.json`` (mode 0600): the first
start records a ``create`` entry, a start with other settings an ``update`` entry naming the
settings that changed (``store.max_bytes``, ``mqtt.password``…), a start with the same settings
nothing. The entry says names only, never values: it is forwarded to the hospital like every
audit entry, and some values are secrets. Locally a secret is kept as its SHA-256 only, enough to
see that it changed. The file is written after the entry, so a start that could not record one
(a full disk: a warning, and the gateway starts) records it at the next start.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from pydantic import BaseModel, SecretStr
from pydantic_core import to_jsonable_python

from gateway.errors import BedsideError
from gateway.paths import write_private_file
from gateway.review.audit import AuditTrail

APPLIED_FILE: Final = "config-applied.json"
MAX_NAMED: Final = 20  # settings named in one entry; more are counted

log = logging.getLogger(__name__)


def flatten(settings: BaseModel, prefix: str = "") -> dict[str, str]:
    """Dotted setting name → its value as canonical JSON (a secret: its SHA-256)."""
    out: dict[str, str] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        key = f"{prefix}{name}"
        if isinstance(value, BaseModel):
            out |= flatten(value, f"{key}.")
        elif isinstance(value, SecretStr):
            digest = hashlib.sha256(value.get_secret_value().encode()).hexdigest()
            out[key] = json.dumps(f"sha256:{digest}")
        else:
            out[key] = json.dumps(to_jsonable_python(value), sort_keys=True)
    return out


def changed(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    """The names of the settings set, removed or changed between two flattenings, sorted."""
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def describe(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_NAMED])
    more = f" and {len(names) - MAX_NAMED} more" if len(names) > MAX_NAMED else ""
    return f"changed since the last start: {shown}{more}"


def _read(path: Path) -> dict[str, str] | None:
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # unreadable: every setting counts as changed
    return {str(k): str(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}


async def audit_configuration(trail: AuditTrail, data_dir: Path, settings: BaseModel) -> str | None:
    """Record the settings of this start when they are new or changed; the entry's detail."""
    path = data_dir / APPLIED_FILE
    applied = flatten(settings)
    before = _read(path)
    if before is None:
        action, detail = "create", f"first start: {len(applied)} settings"
    else:
        names = changed(before, applied)
        if not names:
            return None
        action, detail = "update", describe(names)
    try:
        await trail.record(action, user=None, role="system", what="Configuration", detail=detail)
        write_private_file(path, json.dumps(applied, indent=1, sort_keys=True))
    except (BedsideError, OSError) as exc:
        log.warning("the configuration's audit entry waits for the next start: %s", exc)
        return None
    return detail
