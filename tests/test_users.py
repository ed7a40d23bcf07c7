"""Local accounts (gateway.users): passwords, lockout, tokens, sessions, `bedside users`, and the
demo's accounts."""

from __future__ import annotations

import json
import sqlite3
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli import app
from gateway.review.keys import generate
from gateway.users import USERS_FILE, LockedError, Role, UserDirectory, UserError
from gateway.users.demo import DEMO_USERS_FILE, ensure_demo_users
from gateway.users.directory import LOCK_MAX_S, MAX_FAILURES, SESSION_S, lock_time

PASSWORD = "correct horse battery"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def users(tmp_path: Path, clock: Clock) -> UserDirectory:
    directory = UserDirectory(tmp_path, clock=clock)
    yield directory  # type: ignore[misc]
    directory.close()


def test_a_user_logs_in_with_the_password_and_the_file_is_private(
    users: UserDirectory, tmp_path: Path
) -> None:
    assert users.add("nurse.kim", "clinician", PASSWORD) == PASSWORD
    session = users.login("nurse.kim", PASSWORD)
    assert session.user.name == "nurse.kim"
    assert session.user.role is Role.CLINICIAN
    assert users.session(session.session_id) == session
    assert stat.S_IMODE((tmp_path / USERS_FILE).stat().st_mode) == 0o600
    raw = (tmp_path / USERS_FILE).read_bytes()
    assert PASSWORD.encode() not in raw
    assert session.session_id.encode() not in raw  # only its SHA-256 is kept


def test_a_generated_password_is_long_and_shown_once(users: UserDirectory) -> None:
    password = users.add("tech", "technician")
    assert len(password) >= 24
    assert users.login("tech", password).user.role is Role.TECHNICIAN


@pytest.mark.parametrize(
    ("name", "role", "password", "message"),
    [
        ("Bad Name", "technician", PASSWORD, "user name"),
        ("tech", "nurse", PASSWORD, "role 'nurse'"),
        ("tech", "technician", "short", "at least 12"),
    ],
)
def test_bad_accounts_are_refused_with_a_sentence(
    users: UserDirectory, name: str, role: str, password: str, message: str
) -> None:
    with pytest.raises(UserError, match=message):
        users.add(name, role, password)


def test_a_name_is_taken_once(users: UserDirectory) -> None:
    users.add("tech", "technician", PASSWORD)
    with pytest.raises(UserError, match="exists already"):
        users.add("tech", "admin", PASSWORD)


def test_a_wrong_password_and_an_unknown_name_get_the_same_answer(users: UserDirectory) -> None:
    users.add("tech", "technician", PASSWORD)
    with pytest.raises(UserError) as wrong:
        users.login("tech", "not the password")
    with pytest.raises(UserError) as unknown:
        users.login("ghost", "not the password")
    assert str(wrong.value) == str(unknown.value) == "the user name or password is not right"


def test_repeated_failures_lock_the_account_for_longer_each_time(
    users: UserDirectory, clock: Clock
) -> None:
    users.add("tech", "technician", PASSWORD)
    for _ in range(MAX_FAILURES):
        with pytest.raises(UserError, match="not right"):
            users.login("tech", "wrong password!")
    with pytest.raises(LockedError, match="try again in 30 s") as locked:
        users.login("tech", PASSWORD)  # even the right password waits
    assert locked.value.retry_after_s == pytest.approx(30)
    clock.now += 31
    with pytest.raises(UserError, match="not right"):
        users.login("tech", "wrong password!")
    with pytest.raises(LockedError, match="try again in 60 s"):
        users.login("tech", PASSWORD)
    clock.now += 61
    assert users.login("tech", PASSWORD).user.name == "tech"  # and the count is reset
    with pytest.raises(UserError, match="not right"):
        users.login("tech", "wrong password!")
    assert users.login("tech", PASSWORD).user.name == "tech"
    assert lock_time(MAX_FAILURES - 1) == 0
    assert lock_time(MAX_FAILURES + 20) == LOCK_MAX_S


def test_tokens_are_shown_once_kept_hashed_and_refused_once_disabled(
    users: UserDirectory, tmp_path: Path
) -> None:
    users.add("doc", "clinician", PASSWORD)
    token = users.new_token("doc")
    session = users.login("doc", PASSWORD)
    assert token.encode() not in (tmp_path / USERS_FILE).read_bytes()
    user = users.token_user(token)
    assert user is not None
    assert user.role is Role.CLINICIAN
    assert users.token_user(token + "x") is None
    users.set_disabled("doc", True)
    assert users.token_user(token) is None
    assert users.session(session.session_id) is None
    with pytest.raises(UserError, match="disabled"):
        users.login("doc", PASSWORD)
    users.set_disabled("doc", False)
    assert users.token_user(token) is not None
    with pytest.raises(UserError, match="no user"):
        users.new_token("ghost")


def test_sessions_end_at_logout_at_expiry_and_with_a_new_password(
    users: UserDirectory, clock: Clock
) -> None:
    users.add("tech", "technician", PASSWORD)
    first = users.login("tech", PASSWORD)
    users.logout(first.session_id)
    assert users.session(first.session_id) is None
    second = users.login("tech", PASSWORD)
    clock.now += SESSION_S + 1
    assert users.session(second.session_id) is None
    third = users.login("tech", PASSWORD)
    users.set_password("tech", "another long password")
    assert users.session(third.session_id) is None
    assert users.login("tech", "another long password").user.name == "tech"


def test_the_users_command(tmp_path: Path) -> None:
    runner = CliRunner()
    where = ["--data-dir", str(tmp_path)]
    made = runner.invoke(app, ["users", "add", "ana", "--role", "admin", *where])
    assert made.exit_code == 0, made.output
    password = made.output.strip().rsplit(" ", 1)[-1]
    typed = runner.invoke(
        app,
        ["users", "add", "ben", "--role", "clinician", "--password-stdin", *where],
        input=PASSWORD + "\n",
    )
    assert typed.output.strip() == "ben (clinician) created"
    token = runner.invoke(app, ["users", "token", "ben", *where]).output.strip()
    assert runner.invoke(app, ["users", "disable", "ben", *where]).output.strip() == "ben: disabled"
    listed = json.loads(runner.invoke(app, ["users", "list", "--json", *where]).output)
    assert [(u["name"], u["role"], u["disabled"], u["tokens"]) for u in listed] == [
        ("ana", "admin", False, 0),
        ("ben", "clinician", True, 1),
    ]
    bad = runner.invoke(app, ["users", "add", "cy", "--role", "nurse", *where])
    assert bad.exit_code == 2
    assert "error: role 'nurse'" in bad.output
    missing = runner.invoke(app, ["users", "enable", "ghost", *where])
    assert missing.exit_code == 2
    directory = UserDirectory(tmp_path)
    assert directory.login("ana", password).user.role is Role.ADMIN
    assert directory.token_user(token) is None  # ben is disabled
    directory.close()


def test_the_demo_accounts_are_made_once_and_kept(tmp_path: Path) -> None:
    directory = UserDirectory(tmp_path)
    first = ensure_demo_users(directory, tmp_path)
    path = tmp_path / DEMO_USERS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert set(first) == {"technician", "clinician", "admin"}
    for role, entry in first.items():
        assert entry["username"] == role
        assert directory.login(role, entry["password"]).user.role == Role(role)
        user = directory.token_user(entry["token"])
        assert user is not None
        assert user.role == Role(role)
    assert ensure_demo_users(directory, tmp_path) == first
    path.unlink()  # credentials lost: new ones, for the same accounts
    again = ensure_demo_users(directory, tmp_path)
    assert again["technician"]["password"] != first["technician"]["password"]
    assert directory.login("technician", again["technician"]["password"]).user.name == "technician"
    directory.close()


def test_a_directory_made_before_revocation_gains_it(tmp_path: Path, clock: Clock) -> None:
    key = generate()
    with sqlite3.connect(tmp_path / USERS_FILE) as old:  # the keys table as first released
        old.executescript(
            "CREATE TABLE users (name TEXT PRIMARY KEY, role TEXT NOT NULL, password_hash TEXT "
            "NOT NULL, disabled INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL, failures "
            "INTEGER NOT NULL DEFAULT 0, locked_until REAL NOT NULL DEFAULT 0);"
            "CREATE TABLE keys (kid TEXT PRIMARY KEY, user TEXT NOT NULL REFERENCES "
            "users(name) ON DELETE CASCADE, jwk TEXT NOT NULL, created REAL NOT NULL);"
            "CREATE TABLE tokens (digest TEXT PRIMARY KEY, user TEXT NOT NULL REFERENCES "
            "users(name) ON DELETE CASCADE, created REAL NOT NULL);"
        )
        old.execute("INSERT INTO tokens VALUES (?, 'clara', 3.0)", ("ab" * 32,))
        old.execute("INSERT INTO users VALUES ('clara', 'clinician', 'x', 0, 1.0, 0, 0)")
        old.execute(
            "INSERT INTO keys VALUES (?, 'clara', ?, 2.0)", (key.kid, json.dumps(key.public_jwk))
        )
    old.close()
    directory = UserDirectory(tmp_path, clock=clock)
    try:
        assert list(directory.public_keys("clara")) == [key.kid]
        directory.revoke_key("clara", key.kid)
        assert directory.public_keys("clara") == {}
        [listed] = directory.keys("clara")
        assert (listed.kid, listed.revoked) == (key.kid, clock.now)
        with pytest.raises(UserError, match="this key was revoked on 1970-01-12"):
            directory.add_key("clara", key.public_jwk)
        assert [(t.id, t.label) for t in directory.tokens("clara")] == [("ab" * 6, "")]
        directory.revoke_token("clara", "ab" * 6)
        assert directory.tokens("clara") == []
    finally:
        directory.close()


def test_one_token_is_revoked_by_its_id_and_the_others_go_on(tmp_path: Path) -> None:
    runner = CliRunner()
    where = ["--data-dir", str(tmp_path)]
    runner.invoke(app, ["users", "add", "doc", "--role", "clinician", *where])
    laptop = runner.invoke(app, ["users", "token", "doc", "--label", "doc laptop", *where])
    service = runner.invoke(app, ["users", "token", "doc", *where])
    assert laptop.exit_code == service.exit_code == 0, laptop.output
    listed = json.loads(runner.invoke(app, ["users", "tokens", "doc", "--json", *where]).stdout)
    assert sorted(t["label"] for t in listed) == ["", "doc laptop"]
    [laptop_id] = [t["id"] for t in listed if t["label"] == "doc laptop"]
    assert laptop.stdout.strip() not in json.dumps(listed)

    revoked = runner.invoke(app, ["users", "revoke-token", "doc", laptop_id, *where])
    assert revoked.stdout.strip() == f"doc: API token {laptop_id} revoked"
    directory = UserDirectory(tmp_path)
    try:
        assert directory.token_user(laptop.stdout.strip()) is None
        assert directory.token_user(service.stdout.strip()) is not None
        assert [t.label for t in directory.tokens("doc")] == [""]
    finally:
        directory.close()
    plain = runner.invoke(app, ["users", "tokens", "doc", *where]).stdout
    assert plain.count("\n") == 1
    assert "made " in plain
    for args, refusal in (
        (["revoke-token", "doc", laptop_id], f"'doc' has no token '{laptop_id}'"),
        (["revoke-token", "doc", "secret"], "'secret' is not a token id"),
        (["tokens", "ghost"], "no user 'ghost'"),
        (["token", "doc", "--label", "x" * 81], "at most 80 characters"),
    ):
        refused = runner.invoke(app, ["users", *args, *where])
        assert refused.exit_code == 2, args
        assert refusal in refused.output
