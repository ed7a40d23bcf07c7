"""``bedside users add|list|disable|enable|token|tokens|revoke-token|key|keys|revoke-key``: the
gateway's local accounts, their API tokens and the clinicians' signing keys.

They work on ``DATA_DIR/users.sqlite3`` directly, with or without the gateway running (it sees a
change at its next request). A password or token is printed once, when made, and never again.
There is no default account: the first admin is made with ``bedside users add NAME --role admin``.
Exit status: 0 success; 2 a usage or input error, one line on stderr. docs/contracts.md,
"Users and roles".
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from gateway.command_options import ConfigOption, DataDirOption, fail
from gateway.errors import BedsideError

if TYPE_CHECKING:
    from gateway.users import UserDirectory

users_app = typer.Typer(
    help="Local accounts: technicians, clinicians and admins.", no_args_is_help=True
)
_T = TypeVar("_T")
NameArgument = Annotated[str, typer.Argument(help="User name (a-z 0-9 . _ -).")]


def _data_dir(config: ConfigOption, data_dir: DataDirOption) -> Path:
    from gateway.config import load_settings

    try:
        return load_settings(config, data_dir=data_dir).data_dir
    except BedsideError as exc:
        fail(str(exc))


def _users(config: ConfigOption, data_dir: DataDirOption) -> UserDirectory:
    from gateway.users import UserDirectory

    try:
        return UserDirectory(_data_dir(config, data_dir))
    except (BedsideError, OSError) as exc:
        fail(str(exc))


def _audit(
    config: ConfigOption, data_dir: DataDirOption, action: str, name: str, detail: str
) -> None:
    """Record a change to the accounts in the audit trail (docs/architecture.md)."""
    from gateway.review.audit import record_offline

    try:
        record_offline(
            _data_dir(config, data_dir), action, user=None, role="admin (command line)",
            what="User", what_id=name, detail=detail,
        )  # fmt: skip
    except (BedsideError, OSError) as exc:
        fail(f"{name}: {detail}, but the audit trail could not record it: {exc}")


def _on_users(
    config: ConfigOption, data_dir: DataDirOption, act: Callable[[UserDirectory], _T]
) -> _T:
    """``act`` on the users directory; a refusal (:class:`UserError`) is the command's error."""
    from gateway.users import UserError

    try:
        return act(_users(config, data_dir))
    except UserError as exc:
        fail(str(exc))


def _revoke(
    config: ConfigOption,
    data_dir: DataDirOption,
    name: str,
    what: str,
    revoke: Callable[[UserDirectory], None],
) -> None:
    """Revoke ``what`` of user ``name`` with ``revoke``, audit it and say so."""
    _on_users(config, data_dir, revoke)
    _audit(config, data_dir, "update", name, f"{what} revoked")
    typer.echo(f"{name}: {what} revoked")


def _print_rows(
    config: ConfigOption,
    data_dir: DataDirOption,
    as_json: bool,
    rows_of: Callable[[UserDirectory], list[dict[str, Any]]],
    line: Callable[[dict[str, Any]], str],
) -> None:
    """Print what ``rows_of`` lists, as JSON or a tab-separated ``line`` each."""
    rows = _on_users(config, data_dir, rows_of)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        typer.echo(line(row))


@users_app.command("add")
def users_add(
    name: NameArgument,
    role: Annotated[str, typer.Option("--role", help="technician, clinician or admin.")],
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin", help="Read the password from stdin (else one is generated)."
        ),
    ] = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Create a user; prints the generated password once."""
    from gateway.users import UserError

    directory = _users(config, data_dir)
    password = sys.stdin.readline().rstrip("\n") if password_stdin else None
    try:
        made = directory.add(name, role, password)
    except UserError as exc:
        fail(str(exc))
    _audit(config, data_dir, "create", name, f"created with role {role}")
    if password is None:
        typer.echo(f"{name} ({role}) created; password (shown once): {made}")
    else:
        typer.echo(f"{name} ({role}) created")


@users_app.command("list")
def users_list(
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every user with role, state and number of API tokens."""
    users = _users(config, data_dir).users()
    if as_json:
        typer.echo(json.dumps([u.as_json() for u in users], indent=2))
        return
    for user in users:
        state = "disabled" if user.disabled else "enabled"
        typer.echo(f"{user.name}\t{user.role}\t{state}\t{user.tokens} token(s)")


def _set_disabled(name: str, disabled: bool, config: ConfigOption, data_dir: DataDirOption) -> None:
    _on_users(config, data_dir, lambda users: users.set_disabled(name, disabled))
    _audit(config, data_dir, "update", name, "disabled" if disabled else "enabled")
    typer.echo(f"{name}: {'disabled' if disabled else 'enabled'}")


@users_app.command("disable")
def users_disable(
    name: NameArgument, config: ConfigOption = None, data_dir: DataDirOption = None
) -> None:
    """Refuse the user's password, tokens and sessions from now on."""
    _set_disabled(name, True, config, data_dir)


@users_app.command("enable")
def users_enable(
    name: NameArgument, config: ConfigOption = None, data_dir: DataDirOption = None
) -> None:
    """Let a disabled user in again."""
    _set_disabled(name, False, config, data_dir)


@users_app.command("token")
def users_token(
    name: NameArgument,
    label: Annotated[
        str, typer.Option("--label", help="Where the token is used (e.g. 'clara laptop').")
    ] = "",
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Make an API token for the user; printed once (only its hash is kept)."""
    token = _on_users(config, data_dir, lambda users: users.new_token(name, label))
    _audit(config, data_dir, "update", name, f"API token made{f' ({label})' if label else ''}")
    typer.echo(token)


@users_app.command("tokens")
def users_tokens(
    name: NameArgument,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The user's API tokens: id, label, when made (never the tokens themselves)."""
    _print_rows(
        config,
        data_dir,
        as_json,
        lambda users: [token.as_json() for token in users.tokens(name)],
        lambda row: f"{row['id']}\tmade {row['created']}\t{row['label']}".rstrip(),
    )


@users_app.command("revoke-token")
def users_revoke_token(
    name: NameArgument,
    token_id: Annotated[str, typer.Argument(help="The token's id (`bedside users tokens NAME`).")],
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Revoke one API token: refused from its next request on."""
    _revoke(
        config, data_dir, name, f"API token {token_id}", lambda u: u.revoke_token(name, token_id)
    )


@users_app.command("key")
def users_key(
    name: NameArgument,
    public_jwk: Annotated[
        Path,
        typer.Argument(help="The clinician's public JWK (what `bedside review keygen` printed)."),
    ],
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Register a clinician's public signing key; prints its thumbprint (the JWS kid)."""
    from gateway.users import UserError

    try:
        jwk = json.loads(public_jwk.read_text(encoding="utf-8"))
    except OSError as exc:
        fail(f"{public_jwk}: cannot read it ({exc.strerror})")
    except ValueError as exc:
        fail(f"{public_jwk}: not JSON ({exc})")
    try:
        kid = _users(config, data_dir).add_key(name, jwk)
    except (UserError, BedsideError) as exc:
        fail(str(exc))
    _audit(config, data_dir, "update", name, f"signing key {kid} registered")
    typer.echo(json.dumps({"user": name, "kid": kid}))


@users_app.command("keys")
def users_keys(
    name: NameArgument,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The user's registered signing keys: thumbprint, when registered, when revoked."""
    _print_rows(
        config,
        data_dir,
        as_json,
        lambda users: [key.as_json() for key in users.keys(name)],
        lambda row: (
            f"{row['kid']}\tregistered {row['created']}\t"
            + (f"revoked {row['revoked']}" if row["revoked"] else "valid")
        ),
    )


@users_app.command("revoke-key")
def users_revoke_key(
    name: NameArgument,
    kid: Annotated[str, typer.Argument(help="The key's thumbprint (`bedside users keys NAME`).")],
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Revoke one signing key: it signs no decision from now on (decisions signed before stay)."""
    _revoke(config, data_dir, name, f"signing key {kid}", lambda u: u.revoke_key(name, kid))


def register(app: typer.Typer) -> None:
    app.add_typer(users_app, name="users")
