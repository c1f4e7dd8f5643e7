"""The `gateway` command: run the stack, its parts, and the ops tasks."""

from __future__ import annotations

import argparse
import asyncio
import errno
import getpass
import logging
import sys
import warnings
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import asyncpg

from gateway.config.routes import KeyPolicy
from gateway.config.settings import Settings, SettingsError, load_settings, settings_warnings
from gateway.ops.startup import (
    PortClaim,
    StartupError,
    claim_ports,
    embedded_problems,
    route_problems,
    secret_problems,
    tls_problems,
)

__all__ = ["main"]

Command = Callable[[argparse.Namespace, Settings], int]

# Errors of a socket that cannot listen: said in one line even if one slips past the checks.
_BIND_ERRORS = frozenset({errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES})


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def _refuse_on(problems: Sequence[str]) -> None:
    if problems:
        raise StartupError(problems)


def _check_ports(claims: Sequence[PortClaim], problems: Sequence[str]) -> None:
    """Refuse to start (`StartupError`) on any problem or any port that cannot be had; the
    ports are let go again for the server to open."""
    for sock in claim_ports(claims, problems).values():
        sock.close()


def _run_db(settings: Settings, work: Callable[[asyncpg.Connection, Settings],
                                               Awaitable[int]], command: str) -> int:
    """Run `work` with a connection to the (resolved, migrated) database."""
    from gateway.ops.runtime import migrate_database, resolved

    _refuse_on(embedded_problems(settings, command))
    with resolved(settings) as live:
        assert live.database_url is not None

        async def go() -> int:
            await migrate_database(live.database_url or "")
            conn = await asyncpg.connect(live.database_url)
            try:
                return await work(conn, live)
            finally:
                await conn.close()

        return asyncio.run(go())


# --- servers -----------------------------------------------------------------------------


def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.ops.devstack import DevPorts, run_dev

    return run_dev(settings, DevPorts(port=args.port, admin_port=args.admin_port,
                                      status_port=args.status_port,
                                      sandbox_port=args.sandbox_port, mail_port=args.mail_port))


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.edge.server import serve
    from gateway.ops.runtime import resolved

    _check_ports([PortClaim(args.port, "the gateway's", "--port", args.host),
                  PortClaim(args.status_port, "the status port's", "--status-port", args.host)],
                 [*route_problems(settings), *tls_problems(settings),
                  *secret_problems(settings), *embedded_problems(settings, "serve")])
    for line in settings_warnings(settings):
        print(f"warning: {line}", file=sys.stderr)
    with resolved(settings) as live:
        return serve(live, port=args.port, status_port=args.status_port, workers=args.workers,
                     host=args.host)


def cmd_admin(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.ops.runtime import resolved

    try:
        from admin_ui.app import run_admin
    except ImportError as exc:
        return _fail(f"the admin UI is not installed: {exc}")
    _check_ports([PortClaim(args.port, "the admin UI's", "--port", args.host)],
                 [*route_problems(settings), *tls_problems(settings),
                  *secret_problems(settings), *embedded_problems(settings, "admin")])
    with resolved(settings) as live:
        run_admin(live, port=args.port, host=args.host)
    return 0


def cmd_sandbox(args: argparse.Namespace, settings: Settings) -> int:
    from aiohttp import web

    from sandbox import build_sandbox_app

    socks = claim_ports([PortClaim(args.port, "the sandbox exchange's", "--port", args.host)])
    print(f"sandbox exchange on http://{args.host}:{args.port}/public/v1", flush=True)
    web.run_app(build_sandbox_app(), sock=socks["--port"], print=None, access_log=None)
    return 0


# --- ops ---------------------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.ops.runtime import migrate_database, resolved

    _refuse_on(embedded_problems(settings, "migrate"))
    with resolved(settings) as live:
        applied = asyncio.run(migrate_database(live.database_url or ""))
    print(f"applied {len(applied)} migration(s): {', '.join(applied)}" if applied
          else "database is up to date")
    return 0


def cmd_check_config(args: argparse.Namespace, settings: Settings) -> int:
    """Settings (loaded by `main`), TLS files and the route file; warnings do not fail it."""
    from gateway.config.route_file import ConfigError, load_route_table

    path = Path(args.path) if args.path else settings.routes_path
    for line in settings_warnings(settings):
        print(f"warning: {line}", file=sys.stderr)
    problems = tls_problems(settings)
    try:
        table = load_route_table(path, settings.upstream_url,
                                 stream_upstream_override=settings.stream_upstream_url)
    except ConfigError as exc:
        problems = [*exc.problems, *problems]
    if problems:
        raise StartupError(problems)
    print(f"{path}: ok ({len(table.routes)} routes, permissions: "
          f"{', '.join(table.permissions)})")
    for line in _policy_impact(table.policy, settings):
        print(line)
    return 0


def _policy_impact(policy: KeyPolicy, settings: Settings) -> list[str]:
    """How many existing keys each policy rule affects, when the database can be asked."""
    from gateway.keys.policy import policy_impact

    rules = (bool(policy.require_ip_allowlist) + (policy.max_key_lifetime_days is not None)
             + (policy.dormant_after_days is not None))
    if not rules:
        return []
    if not settings.database_url:
        return ["policy: could not count the existing keys it affects (no "
                "GATEWAY_DATABASE_URL)"]

    async def count() -> list[str]:
        conn = await asyncpg.connect(settings.database_url, timeout=5)
        try:
            return await policy_impact(conn, policy)
        finally:
            await conn.close()

    try:
        return asyncio.run(count())
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return [f"policy: could not count the existing keys it affects (database: "
                f"{exc.__class__.__name__}: {exc})"]


def cmd_users_create(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.keys.accounts import AccountError, create_user

    password = (getpass.getpass("password: ") if sys.stdin.isatty()
                else sys.stdin.readline().rstrip("\r\n"))

    async def work(conn: asyncpg.Connection, _live: Settings) -> int:
        try:
            user_id = await create_user(conn, args.email, password, verified=True)
        except AccountError as exc:
            return _fail(str(exc))
        print(f"created user {user_id} <{args.email}>", file=sys.stderr)
        return 0

    return _run_db(settings, work, "users")


def cmd_keys_create(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.config.route_file import ConfigError, load_route_table
    from gateway.keys.accounts import find_user_id
    from gateway.keys.addresses import AddressError, parse_addresses
    from gateway.keys.allowlist import AllowlistError, parse_allowlist
    from gateway.keys.expiry import parse_lifetime
    from gateway.keys.lifecycle import PolicyRefused, activate_key, create_key

    try:
        table = load_route_table(settings.routes_path, settings.upstream_url)
        ips = parse_allowlist(args.ip or [])
        addresses = parse_addresses(args.withdraw_address or [])
        lifetime = parse_lifetime(args.expires_in) if args.expires_in else None
    except ConfigError as exc:
        raise StartupError(exc.problems) from exc
    except (AllowlistError, AddressError) as exc:
        return _fail(str(exc))
    except ValueError as exc:
        return _fail(f"--expires-in: {exc}")
    known = table.permissions
    permissions = [p.strip() for p in args.permissions.split(",") if p.strip()]
    unknown = [p for p in permissions if p not in known]
    if not permissions or unknown:
        return _fail(f"unknown permission(s) {', '.join(unknown) or '(none given)'}; "
                     f"known: {', '.join(known)}")

    async def work(conn: asyncpg.Connection, live: Settings) -> int:
        user_id = await find_user_id(conn, args.email)
        if user_id is None:
            return _fail(f"no user with email {args.email}")
        try:
            key_id = await create_key(conn, user_id=user_id, name=args.name,
                                      permissions=permissions, allowed_ips=ips, actor="ops",
                                      lifetime=lifetime, withdraw_addresses=addresses,
                                      policy=table.policy)
        except PolicyRefused as exc:
            return _fail(_policy_message(exc))
        token = await activate_key(conn, key_id, pepper=live.key_pepper or "",
                                   hash_version=live.key_pepper_version, actor="ops")
        print(f"created key {key_id}; the token below is shown only this once", file=sys.stderr)
        print(token)
        return 0

    return _run_db(settings, work, "keys")


def _policy_message(exc: Exception) -> str:
    """A refusal by the key policy, in the CLI's words (`--ip`, `--expires-in`)."""
    problems: dict[str, str] = getattr(exc, "problems", {})
    hints = {"ips": "give --ip ADDR", "expires_in": "give --expires-in DURATION"}
    return "; ".join(f"{text.rstrip('.')} ({hints.get(field, field)})"
                     for field, text in problems.items()) or str(exc)


def _when(value: object) -> str:
    from datetime import datetime

    return value.strftime("%Y-%m-%d %H:%M") if isinstance(value, datetime) else "-"


def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import UTC, datetime

    from gateway.keys.accounts import find_user_id
    from gateway.keys.lifecycle import list_keys

    async def work(conn: asyncpg.Connection, _live: Settings) -> int:
        user_id = await find_user_id(conn, args.email)
        if user_id is None:
            return _fail(f"no user with email {args.email}")
        keys = await list_keys(conn, user_id, include_deleted=args.all)
        now = datetime.now(UTC)
        print("times in UTC")
        print(f"{'KEY ID':<18} {'STATUS':<8} {'PERMISSIONS':<20} {'IPS':<24} {'EXPIRES':<16} "
              f"{'LAST USED':<16} {'FROM':<16} NAME")
        for key in keys:
            status = "expired" if key.status == "active" and key.is_expired(now) else key.status
            expires = _when(key.expires_at) if key.expires_at else "never"
            print(f"{key.key_id:<18} {status:<8} {','.join(key.permissions):<20} "
                  f"{','.join(key.allowed_ips) or 'any':<24} {expires:<16} "
                  f"{_when(key.last_used_at):<16} {key.last_used_ip or '-':<16} {key.name}")
        return 0

    return _run_db(settings, work, "keys")


def cmd_keys_roll(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.config.route_file import ConfigError, load_route_table
    from gateway.config.settings import parse_duration
    from gateway.keys.lifecycle import KeyNotFound, PolicyRefused, activate, roll_key
    from gateway.store.redis import RedisKeyCache, connect_redis

    try:
        table = load_route_table(settings.routes_path, settings.upstream_url)
        overlap = parse_duration(args.overlap)
    except ConfigError as exc:
        raise StartupError(exc.problems) from exc
    except ValueError:
        return _fail(f"--overlap: '{args.overlap}' is not a duration such as 0, 30m or 24h")

    async def work(conn: asyncpg.Connection, live: Settings) -> int:
        client = connect_redis(live.redis_url or "", live.store_timeout)
        cache = RedisKeyCache.from_settings(client, live)
        try:
            new_id = await roll_key(conn, args.key_id, overlap=overlap, actor="ops",
                                    policy=table.policy)
            done = await activate(conn, new_id, pepper=live.key_pepper or "",
                                  hash_version=live.key_pepper_version, actor="ops",
                                  cache=cache)
        except KeyNotFound:
            return _fail(f"no active key {args.key_id}")
        except PolicyRefused as exc:
            return _fail(_policy_message(exc))
        finally:
            await client.aclose()
        ends = (f"{done.old_expires_at:%Y-%m-%d %H:%M:%S} UTC" if done.old_expires_at
                else "now")
        print(f"rolled key {args.key_id} to {new_id}; the old key works until {ends}; the "
              "token below is shown only this once", file=sys.stderr)
        print(done.token)
        return 0

    return _run_db(settings, work, "keys")


def cmd_keys_delete(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.keys.lifecycle import KeyNotFound, delete_key
    from gateway.store.redis import RedisKeyCache, connect_redis

    async def work(conn: asyncpg.Connection, live: Settings) -> int:
        client = connect_redis(live.redis_url or "", live.store_timeout)
        cache = RedisKeyCache.from_settings(client, live)
        try:
            await delete_key(conn, args.key_id, actor="ops", cache=cache)
        except KeyNotFound:
            return _fail(f"no key {args.key_id} (or it is already deleted)")
        finally:
            await client.aclose()
        print(f"deleted key {args.key_id}")
        return 0

    return _run_db(settings, work, "keys")


def cmd_support(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.ops.support import gather, print_report

    sources: list[str] = args.log or []

    async def work(conn: asyncpg.Connection, _live: Settings) -> int:
        try:
            report = await gather(conn, args.request_id, sources)
        except OSError as exc:
            return _fail(str(exc))
        print_report(report, sources, sys.stdout)
        return 0 if report.is_found else 1

    return _run_db(settings, work, "support")


# --- parser ------------------------------------------------------------------------------


def _port(text: str) -> int:
    """argparse type: a TCP port."""
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"'{text}' is not a port number (1 to 65535)")
    return int(text)


def _count(text: str) -> int:
    """argparse type: a positive number."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of at least 1")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway", description="Keygate: an API-key gateway in front of an exchange's API.")
    parser.add_argument("--config", help="settings file (default: $GATEWAY_CONFIG or "
                                         "config/gateway.yaml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Command, help_text: str,
            into: argparse._SubParsersAction[argparse.ArgumentParser] = sub
            ) -> argparse.ArgumentParser:
        p = into.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=fn)
        return p

    p = add("dev", cmd_dev, "run the whole stack on embedded defaults (what `make run` runs)")
    p.add_argument("--port", type=_port, default=8080, help="gateway port (8080)")
    p.add_argument("--admin-port", type=_port, default=8081, help="admin UI port (8081)")
    p.add_argument("--status-port", type=_port, default=8082, help="status port (8082)")
    p.add_argument("--sandbox-port", type=_port, default=9000,
                   help="sandbox exchange port, when no upstream is configured (9000)")
    p.add_argument("--mail-port", type=_port, default=1025,
                   help="dev mail sink port, when no SMTP server is configured (1025)")

    p = add("serve", cmd_serve, "run the data plane only")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (0.0.0.0)")  # noqa: S104
    p.add_argument("--port", type=_port, default=8080, help="gateway port (8080)")
    p.add_argument("--status-port", type=_port, default=8082,
                   help="/metrics, /healthz, /readyz port (8082)")
    p.add_argument("--workers", type=_count, default=1, help="processes sharing the port (1)")

    p = add("admin", cmd_admin, "run the admin UI only")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (0.0.0.0)")  # noqa: S104
    p.add_argument("--port", type=_port, default=8081, help="admin UI port (8081)")

    p = add("sandbox", cmd_sandbox, "run the sandbox exchange (a fake upstream)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=_port, default=9000, help="port (9000)")

    add("migrate", cmd_migrate, "apply the SQL migrations (idempotent)")

    p = add("check-config", cmd_check_config, "validate settings and route YAML")
    p.add_argument("path", nargs="?", help="route file (default: the configured one)")

    users = add("users", lambda a, s: 0, "manage users").add_subparsers(
        dest="users_command", required=True, metavar="COMMAND")
    p = add("create", cmd_users_create, "create a user; the password is read from stdin", users)
    p.add_argument("--email", required=True)

    keys = add("keys", lambda a, s: 0, "manage API keys").add_subparsers(
        dest="keys_command", required=True, metavar="COMMAND")
    p = add("create", cmd_keys_create, "create an active key; prints its token once", keys)
    p.add_argument("--email", required=True, help="the owner")
    p.add_argument("--name", required=True)
    p.add_argument("--permissions", required=True, help="comma-separated, e.g. read,trade")
    p.add_argument("--ip", action="append", metavar="ADDR",
                   help="allowed client address (repeat, up to 5; none = any)")
    p.add_argument("--expires-in", metavar="DURATION",
                   help="expire after this long, e.g. 30m, 12h, 90d (default: never)")
    p.add_argument("--withdraw-address", action="append", metavar="ADDR",
                   help="allowed withdrawal address (repeat, up to 20; none = any)")
    p = add("list", cmd_keys_list, "list a user's keys (ids, never secrets)", keys)
    p.add_argument("--email", required=True)
    p.add_argument("--all", action="store_true", help="include deleted keys")
    p = add("roll", cmd_keys_roll, "replace a key by a new one with the same settings; prints "
                                   "the new token once; the old key works for the overlap", keys)
    p.add_argument("key_id")
    p.add_argument("--overlap", default="24h", metavar="DURATION",
                   help="how long the old key keeps working, e.g. 30m, 24h (default 24h)")
    p = add("delete", cmd_keys_delete, "delete a key for good", keys)
    p.add_argument("key_id")

    p = add("support", cmd_support, "ops: everything about one request id (access-log lines, "
                                    "audit rows, the key it used); exit 1 when nothing is found")
    p.add_argument("request_id", metavar="REQUEST_ID")
    p.add_argument("--log", action="append", metavar="FILE",
                   help="access log to search (repeat; '-' reads standard input)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The embedded servers' libraries (and the dev mail sink's, at every message) narrate
    # every step; keep their warnings only.
    for name in ("pgserver", "mail.log", "mail.debug"):
        logging.getLogger(name).setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    warnings.filterwarnings("ignore", module="platformdirs")
    try:
        settings = load_settings(Path(args.config) if args.config else None)
        result: int = args.func(args, settings)
    except SettingsError as exc:
        for line in exc.problems:
            print(f"error: {line}", file=sys.stderr)
        return 1
    except StartupError as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        return 1
    except OSError as exc:
        if exc.errno not in _BIND_ERRORS:
            raise
        return _fail(f"a port cannot be opened: {exc.strerror or exc}")
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
