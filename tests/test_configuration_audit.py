"""The configuration a gateway starts with is in its audit trail (gateway/review/configuration.py):
the first start, then each start whose settings changed, naming the settings but no values."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from gateway.review.configuration import APPLIED_FILE, MAX_NAMED, changed, describe, flatten
from gateway.store import store_path
from tests.harness import running_gateway
from tests.sim_central import FAST


class Inner(BaseModel):
    url: str = "mqtt://broker"
    password: SecretStr | None = None


class Outer(BaseModel):
    budget: int = 10
    allow: list[str] = []
    inner: Inner = Inner()


def test_flatten_names_every_setting_and_keeps_a_secret_as_its_digest() -> None:
    plain = flatten(Outer())
    assert set(plain) == {"budget", "allow", "inner.url", "inner.password"}
    secret = flatten(Outer(inner=Inner(password=SecretStr("hunter2hunter2"))))
    assert "hunter2" not in json.dumps(secret)
    assert secret["inner.password"].startswith('"sha256:')
    assert changed(plain, secret) == ["inner.password"]
    other = flatten(Outer(budget=11, allow=["AA:BB"], inner=Inner(password=SecretStr("other"))))
    assert changed(secret, other) == ["allow", "budget", "inner.password"]
    assert changed(other, other) == []
    assert changed({"gone": "1"}, {}) == ["gone"]
    many = [f"s{i:02}" for i in range(MAX_NAMED + 3)]
    assert describe(many).endswith("s19 and 3 more")


def entries(data_dir: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(store_path(data_dir)) as db:
        rows = db.execute("SELECT entry FROM audit ORDER BY seq").fetchall()
    db.close()
    return [json.loads(row[0]) for row in rows if json.loads(row[0]).get("what") == "Configuration"]


async def test_starts_record_the_first_configuration_and_each_change(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, ("thermo",), overrides=FAST):
        pass
    [first] = entries(tmp_path)
    assert (first["action"], first["role"], first["user"]) == ("create", "system", None)
    assert first["detail"].startswith("first start: ")
    assert oct((tmp_path / APPLIED_FILE).stat().st_mode & 0o777) == "0o600"

    async with running_gateway(tmp_path, ("thermo",), overrides=FAST):
        pass  # the same settings: nothing recorded
    assert len(entries(tmp_path)) == 1

    mqtt = {"url": "mqtt://127.0.0.1:9", "password": "s3cret-pass", "username": "gw"}
    async with running_gateway(
        tmp_path, ("thermo",), overrides=FAST, store={"max_bytes": 64 << 20}, mqtt=mqtt
    ):
        pass
    [_, update] = entries(tmp_path)
    assert update["action"] == "update"
    assert update["detail"].startswith("changed since the last start: ")
    named = update["detail"].removeprefix("changed since the last start: ").split(", ")
    assert {"store.max_bytes", "mqtt.password", "mqtt.url"} <= set(named)
    assert "s3cret" not in json.dumps(entries(tmp_path))
    assert "s3cret" not in (tmp_path / APPLIED_FILE).read_text()
