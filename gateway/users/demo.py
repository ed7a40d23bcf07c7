"""The demo's accounts: one user per role with a random password and an API token, written to
``DATA_DIR/demo-users.json`` (mode 0600) for whoever runs the demo (docs/contracts.md, "Users and
roles")::

    {"technician": {"username": "technician", "password": "…", "token": "…"},
     "clinician": {…}, "admin": {…}}

A later demo on the same data directory keeps the accounts in that file; an account whose
credentials the file lacks (the file was deleted) gets a new password and token.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

from gateway.paths import write_private_file
from gateway.users.directory import Role, UserDirectory, generate_password

DEMO_USERS_FILE: Final = "demo-users.json"


def ensure_demo_users(directory: UserDirectory, data_dir: Path) -> dict[str, dict[str, str]]:
    """The demo's credentials, made where missing; the file is rewritten when anything changed."""
    path = data_dir / DEMO_USERS_FILE
    try:
        known: dict[str, dict[str, str]] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    out: dict[str, dict[str, str]] = {}
    changed = False
    for role in Role:
        name = role.value
        entry = known.get(name)
        user = directory.get(name)
        if (
            user is not None
            and isinstance(entry, dict)
            and {"username", "password", "token"} <= entry.keys()
            and directory.token_user(entry["token"]) is not None
        ):
            out[name] = entry
            continue
        password = generate_password()
        if user is None:
            directory.add(name, name, password)
        else:
            directory.set_password(name, password)
            directory.set_disabled(name, False)
        out[name] = {"username": name, "password": password, "token": directory.new_token(name)}
        changed = True
    if changed or not path.exists():
        write_private_file(path, json.dumps(out, indent=2) + "\n")
    return out
