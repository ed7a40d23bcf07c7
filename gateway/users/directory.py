"""Local accounts: users with a role, argon2id password hashes, API tokens and login sessions, in
``DATA_DIR/users.sqlite3`` (mode 0600). docs/contracts.md, "Users and roles".

- Roles: ``technician`` (installs and fixes the box: sensors, uplinks, the page), ``clinician``
  (consultations, drafts, the assistant), ``admin`` (everything, and users).
- Passwords are hashed with argon2id (argon2-cffi, its RFC 9106 low-memory profile); none is
  ever stored, logged or defaulted. A generated password is 24 URL-safe characters.
- API tokens and session ids are 256-bit random strings; only their SHA-256 is stored (a random
  256-bit secret needs no slow hash), so a stolen database reveals none of them. A token is shown
  once, when made; lists name it by the first 12 hex characters of that hash (and its label), and
  one token can be revoked by that id.
- After :data:`MAX_FAILURES` wrong passwords in a row an account is locked for a time that
  doubles with every further failure (30 s, 60 s, … up to 15 min); a right password resets it.
- A disabled user authenticates by no means (password, token or session).
- Clinicians' public signing keys: registered, listed and revoked one by one; a revoked key
  signs nothing from then on and can never be registered again.

Blocking SQLite and argon2 (tens of milliseconds a hash): the web side calls the password
functions in a thread. The CLI and the running gateway share the file (WAL); a change by one is
seen by the other at its next request.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import hashlib
import json
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from argon2.profiles import RFC_9106_LOW_MEMORY
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.errors import BedsideError
from gateway.forward.signing import jwk_thumbprint, public_jwk, public_key_from_jwk

USERS_FILE: Final = "users.sqlite3"
_NAME: Final = re.compile(r"[a-z][a-z0-9._-]{0,31}")
MIN_PASSWORD: Final = 12
MAX_FAILURES: Final = 5
LOCK_BASE_S: Final = 30.0
LOCK_MAX_S: Final = 15 * 60.0
SESSION_S: Final = 12 * 3600.0  # a shift
SECRET_BYTES: Final = 32
GENERATED_PASSWORD_BYTES: Final = 18  # 24 characters
TOKEN_ID_CHARS: Final = 12  # hex characters of a token's SHA-256 that name it in lists
MAX_LABEL: Final = 80

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0,
    locked_until REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS tokens (
    digest TEXT PRIMARY KEY,
    user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    created REAL NOT NULL,
    label TEXT NOT NULL DEFAULT ''  -- where it is used, to tell tokens apart
);
CREATE TABLE IF NOT EXISTS keys (
    kid TEXT PRIMARY KEY,
    user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    jwk TEXT NOT NULL,
    created REAL NOT NULL,
    revoked REAL  -- when it stopped signing; kept so that it is never registered again
);
CREATE TABLE IF NOT EXISTS sessions (
    digest TEXT PRIMARY KEY,
    user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    csrf TEXT NOT NULL,
    expires REAL NOT NULL
);
"""


class Role(enum.StrEnum):
    TECHNICIAN = "technician"
    CLINICIAN = "clinician"
    ADMIN = "admin"


class UserError(BedsideError):
    """A user name, role, password or account state that does not allow the request (one
    sentence, safe to show: it never says whether a name exists on a failed login)."""


class LockedError(UserError):
    """Too many wrong passwords: ``retry_after_s`` until the next try."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: Role
    disabled: bool = False
    created: float = 0.0
    tokens: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": str(self.role),
            "disabled": self.disabled,
            "created": self.created,
            "tokens": self.tokens,
        }


@dataclass(frozen=True, slots=True)
class ApiToken:
    """An API token as listed: its id (the start of its SHA-256), label and creation time."""

    id: str
    label: str
    created: float

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "label": self.label, "created": _iso(self.created)}


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A clinician's registered public key: its thumbprint, when registered and revoked."""

    kid: str
    created: float
    revoked: float | None

    def as_json(self) -> dict[str, Any]:
        return {"kid": self.kid, "created": _iso(self.created),
                "revoked": None if self.revoked is None else _iso(self.revoked)}  # fmt: skip


def _iso(when: float) -> str:
    return dt.datetime.fromtimestamp(when, dt.UTC).isoformat(timespec="seconds")


def _day(when: float) -> str:
    return dt.datetime.fromtimestamp(when, dt.UTC).date().isoformat()


@dataclass(frozen=True, slots=True)
class Session:
    """A login: the user, the session id (the cookie) and its CSRF token."""

    user: User
    session_id: str
    csrf: str
    expires: float


def check_name(name: str) -> str:
    if _NAME.fullmatch(name) is None:
        raise UserError(
            f"user name {name!r}: expected 1-32 of a-z 0-9 . _ -, starting with a letter"
        )
    return name


def check_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise UserError(
            f"role {role!r}: expected one of {', '.join(r.value for r in Role)}"
        ) from None


def generate_password() -> str:
    return secrets.token_urlsafe(GENERATED_PASSWORD_BYTES)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def lock_time(failures: int) -> float:
    """Seconds an account stays locked after ``failures`` wrong passwords in a row."""
    if failures < MAX_FAILURES:
        return 0.0
    return min(LOCK_BASE_S * float(2 ** (failures - MAX_FAILURES)), LOCK_MAX_S)


class UserDirectory:
    """The users of one data directory."""

    def __init__(self, data_dir: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = data_dir / USERS_FILE
        self._clock = clock
        self._lock = threading.Lock()
        self._hasher = PasswordHasher.from_parameters(RFC_9106_LOW_MEMORY)
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path.touch(mode=0o600, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        self._add_column("keys", "revoked", "REAL")  # to a directory made before they were
        self._add_column("tokens", "label", "TEXT NOT NULL DEFAULT ''")

    def _add_column(self, table: str, column: str, declaration: str) -> None:
        columns = {row["name"] for row in self._db.execute(f"PRAGMA table_info({table})")}
        if column not in columns:
            with contextlib.suppress(sqlite3.OperationalError):  # another process added it
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- users ------------------------------------------------------------------------------------

    def add(self, name: str, role: str, password: str | None = None) -> str:
        """Create the user; returns the password (generated when none is given)."""
        check_name(name)
        checked_role = check_role(role)
        if password is None:
            password = generate_password()
        elif len(password) < MIN_PASSWORD:
            raise UserError(f"a password needs at least {MIN_PASSWORD} characters")
        hashed = self._hasher.hash(password)
        with self._tx() as db:
            if db.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
                raise UserError(f"user {name!r} exists already")
            db.execute(
                "INSERT INTO users (name, role, password_hash, created) VALUES (?, ?, ?, ?)",
                (name, str(checked_role), hashed, self._clock()),
            )
        return password

    def set_password(self, name: str, password: str) -> None:
        """Replace the user's password (and end their sessions)."""
        if len(password) < MIN_PASSWORD:
            raise UserError(f"a password needs at least {MIN_PASSWORD} characters")
        hashed = self._hasher.hash(password)
        with self._tx() as db:
            if (
                db.execute(
                    "UPDATE users SET password_hash = ?, failures = 0, locked_until = 0 "
                    "WHERE name = ?",
                    (hashed, name),
                ).rowcount
                == 0
            ):
                raise UserError(f"no user {name!r}")
            db.execute("DELETE FROM sessions WHERE user = ?", (name,))

    def users(self) -> list[User]:
        rows = self._db.execute(
            "SELECT u.*, (SELECT count(*) FROM tokens t WHERE t.user = u.name) AS n "
            "FROM users u ORDER BY name"
        ).fetchall()
        return [
            User(r["name"], Role(r["role"]), bool(r["disabled"]), r["created"], r["n"])
            for r in rows
        ]

    def get(self, name: str) -> User | None:
        return next((u for u in self.users() if u.name == name), None)

    def set_disabled(self, name: str, disabled: bool) -> None:
        """Disable (no login, token or session works) or enable the user."""
        with self._tx() as db:
            if (
                db.execute(
                    "UPDATE users SET disabled = ? WHERE name = ?", (int(disabled), name)
                ).rowcount
                == 0
            ):
                raise UserError(f"no user {name!r}")
            if disabled:
                db.execute("DELETE FROM sessions WHERE user = ?", (name,))

    # -- passwords and sessions -------------------------------------------------------------------

    def login(self, name: str, password: str) -> Session:
        """A new session for the right password; UserError (LockedError when locked)."""
        refused = UserError("the user name or password is not right")
        now = self._clock()
        row = self._db.execute("SELECT * FROM users WHERE name = ?", (name,)).fetchone()
        if row is None:
            self._hasher.hash(password)  # the same time for an unknown name
            raise refused
        if row["locked_until"] > now:
            wait = row["locked_until"] - now
            raise LockedError(
                f"too many wrong passwords for {name!r}; try again in {wait:.0f} s", wait
            )
        try:
            self._hasher.verify(row["password_hash"], password)
        except (VerificationError, InvalidHashError):
            failures = row["failures"] + 1
            with self._tx() as db:
                db.execute(
                    "UPDATE users SET failures = ?, locked_until = ? WHERE name = ?",
                    (failures, now + lock_time(failures), name),
                )
            raise refused from None
        if row["disabled"]:
            raise UserError(f"user {name!r} is disabled; an admin can enable it")
        session_id, csrf = secrets.token_urlsafe(SECRET_BYTES), secrets.token_urlsafe(SECRET_BYTES)
        expires = now + SESSION_S
        with self._tx() as db:
            db.execute("UPDATE users SET failures = 0, locked_until = 0 WHERE name = ?", (name,))
            db.execute("DELETE FROM sessions WHERE expires < ?", (now,))
            db.execute(
                "INSERT INTO sessions (digest, user, csrf, expires) VALUES (?, ?, ?, ?)",
                (_digest(session_id), name, csrf, expires),
            )
        user = User(row["name"], Role(row["role"]), False, row["created"])
        return Session(user, session_id, csrf, expires)

    def session(self, session_id: str) -> Session | None:
        """The live session of a cookie (None: unknown, expired, or its user disabled)."""
        row = self._db.execute(
            "SELECT s.csrf, s.expires, u.name, u.role, u.disabled, u.created FROM sessions s "
            "JOIN users u ON u.name = s.user WHERE s.digest = ?",
            (_digest(session_id),),
        ).fetchone()
        if row is None or row["disabled"] or row["expires"] < self._clock():
            return None
        user = User(row["name"], Role(row["role"]), False, row["created"])
        return Session(user, session_id, row["csrf"], row["expires"])

    def logout(self, session_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM sessions WHERE digest = ?", (_digest(session_id),))

    # -- API tokens -------------------------------------------------------------------------------

    def new_token(self, name: str, label: str = "") -> str:
        """A new API token for the user, shown once (its SHA-256 is kept); ``label`` says where
        it is used (a laptop, a service), to tell it apart in :meth:`tokens`."""
        if len(label) > MAX_LABEL or not label.isprintable():
            raise UserError(f"a token's label is printable text of at most {MAX_LABEL} characters")
        token = secrets.token_urlsafe(SECRET_BYTES)
        with self._tx() as db:
            if db.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone() is None:
                raise UserError(f"no user {name!r}")
            db.execute(
                "INSERT INTO tokens (digest, user, created, label) VALUES (?, ?, ?, ?)",
                (_digest(token), name, self._clock(), label),
            )
        return token

    def tokens(self, name: str) -> list[ApiToken]:
        """The user's API tokens, oldest first (never the tokens themselves)."""
        if self.get(name) is None:
            raise UserError(f"no user {name!r}")
        rows = self._db.execute(
            "SELECT digest, created, label FROM tokens WHERE user = ? ORDER BY created, digest",
            (name,),
        ).fetchall()
        return [ApiToken(r["digest"][:TOKEN_ID_CHARS], r["label"], r["created"]) for r in rows]

    def revoke_token(self, name: str, token_id: str) -> None:
        """The token (by the id :meth:`tokens` shows) is refused from now on."""
        if len(token_id) != TOKEN_ID_CHARS or not all(c in "0123456789abcdef" for c in token_id):
            raise UserError(
                f"{token_id!r} is not a token id: `bedside users tokens {name}` lists them"
            )
        with self._tx() as db:
            deleted = db.execute(
                "DELETE FROM tokens WHERE user = ? AND substr(digest, 1, ?) = ?",
                (name, TOKEN_ID_CHARS, token_id),
            ).rowcount
        if deleted == 0:
            raise UserError(
                f"{name!r} has no token {token_id!r}: `bedside users tokens {name}` lists them"
            )

    # -- clinicians' signing keys (public halves only) ----------------------------------------

    def add_key(self, name: str, jwk: object) -> str:
        """Register the user's public Ed25519 JWK (RFC 8037); returns its RFC 7638 thumbprint.
        A private JWK is refused: the private key never reaches the gateway."""
        key = public_key_from_jwk(jwk, "the key file")  # KeyFormatError names the problem
        public = public_jwk(key)
        kid = jwk_thumbprint(public)
        with self._tx() as db:
            user = db.execute("SELECT role FROM users WHERE name = ?", (name,)).fetchone()
            if user is None:
                raise UserError(f"no user {name!r}")
            if user["role"] == Role.TECHNICIAN:
                raise UserError(
                    f"{name!r} is a technician: only clinicians and admins sign reports"
                )
            owner = db.execute("SELECT user, revoked FROM keys WHERE kid = ?", (kid,)).fetchone()
            if owner is not None and owner["user"] != name:
                raise UserError(f"this key is registered to {owner['user']!r} already")
            if owner is not None and owner["revoked"] is not None:
                raise UserError(
                    f"this key was revoked on {_day(owner['revoked'])}: make a new one with "
                    "`bedside review keygen`"
                )
            db.execute(
                "INSERT INTO keys (kid, user, jwk, created) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (kid) DO NOTHING",
                (kid, name, json.dumps(public), self._clock()),
            )
        return kid

    def public_keys(self, name: str) -> dict[str, Ed25519PublicKey]:
        """kid → public key of every key the user registered and has not revoked."""
        rows = self._db.execute(
            "SELECT kid, jwk FROM keys WHERE user = ? AND revoked IS NULL", (name,)
        ).fetchall()
        return {r["kid"]: public_key_from_jwk(json.loads(r["jwk"]), r["kid"]) for r in rows}

    def keys(self, name: str) -> list[SigningKey]:
        """Every key the user registered, revoked ones too, oldest first."""
        if self.get(name) is None:
            raise UserError(f"no user {name!r}")
        rows = self._db.execute(
            "SELECT kid, created, revoked FROM keys WHERE user = ? ORDER BY created, kid", (name,)
        ).fetchall()
        return [SigningKey(r["kid"], r["created"], r["revoked"]) for r in rows]

    def revoke_key(self, name: str, kid: str) -> None:
        """The key signs nothing from now on (a lost laptop, a clinician who left); decisions
        it signed before stay as they were."""
        with self._tx() as db:
            row = db.execute(
                "SELECT revoked FROM keys WHERE kid = ? AND user = ?", (kid, name)
            ).fetchone()
            if row is None:
                raise UserError(
                    f"{name!r} has no key {kid!r}: `bedside users keys {name}` lists them"
                )
            if row["revoked"] is not None:
                raise UserError(f"key {kid!r} was revoked on {_day(row['revoked'])} already")
            db.execute("UPDATE keys SET revoked = ? WHERE kid = ?", (self._clock(), kid))

    def token_user(self, token: str) -> User | None:
        """The enabled user whose API token this is."""
        row = self._db.execute(
            "SELECT u.* FROM tokens t JOIN users u ON u.name = t.user WHERE t.digest = ?",
            (_digest(token),),
        ).fetchone()
        if row is None or row["disabled"]:
            return None
        return User(row["name"], Role(row["role"]), False, row["created"])
