"""The `modelplane` command: run the server, manage bearer tokens, apply migrations.

Every flag can also come from the environment as MODELPLANE_<FLAG_IN_UPPER_SNAKE> (MODELPLANE_DATABASE_URL,
MODELPLANE_NO_AUTH=1, ...); a flag on the command line wins over its variable. Expected failures (bad
input, an unreachable database) print one line and exit 2 (usage) or 1 (environment), never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

# Only the base install (grpcio, protobuf, googleapis-common-protos) may be needed here: this module is
# the `modelplane` console script of every install. What needs the `server` extra is imported where it
# is used, inside _server_extra(), which turns its absence into one line naming the extra.
from modelplane.server.auth.roles import Role
from modelplane.server.config import LOG_LEVELS, ConfigError, ServerConfig, TlsConfig, default_of
from modelplane.server.errors import AlreadyExists, InvalidArgument, ModelplaneError, NotFound

if TYPE_CHECKING:
    from modelplane.server.auth.store import TokenInfo
    from modelplane.server.store.pool import Connection

log = logging.getLogger(__name__)

PROG = "modelplane"
ENV_PREFIX = "MODELPLANE_"
EXIT_USAGE = 2
EXIT_FAILURE = 1

T = TypeVar("T")


class UsageError(Exception):
    """Bad input found after parsing (an environment variable, a flag combination): exit 2, one line."""


class CommandFailed(Exception):
    """The environment let the command down (database unreachable, port taken): exit 1, one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse prints the whole usage block first; one line naming the problem is easier to act on.
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


# Converters: argparse shows an ArgumentTypeError's text after the flag's name.


def _address(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return value


def _existing_file(value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {value}")
    return path


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {value!r}") from None
    if not seconds >= 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {value!r}")
    return seconds


def _count(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {value!r}")
    return number


def _positive_count(value: str) -> int:
    number = _count(value)
    if number == 0:
        raise argparse.ArgumentTypeError("expected a whole number >= 1, got 0")
    return number


def _fraction(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {value!r}") from None
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {value!r}")
    return number


def _log_level(value: str) -> str:
    level = value.strip().upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return level


def _switch(value: str) -> bool:
    """An environment variable standing for an on/off flag."""
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected 1/0, true/false, yes/no or on/off, got {value!r}")


@dataclass(frozen=True)
class Setting:
    """One flag of a command and the environment variable standing in for it."""

    flag: str
    help: str
    convert: Callable[[str], Any] = str
    default: Any = None
    switch: bool = False
    metavar: str | None = None

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.dest.upper()


DATABASE_SETTINGS = (
    Setting(
        "--database-url",
        "Postgres URL; without one, the embedded Postgres in DIR/pgdata (see --data-dir)",
        metavar="URL",
    ),
    Setting(
        "--data-dir",
        "the server's files; the embedded Postgres keeps its data in DIR/pgdata, for every command",
        Path,
        default_of("data_dir"),
        metavar="DIR",
    ),
    Setting(
        "--create-database",
        "create the database of --database-url when it does not exist",
        switch=True,
    ),
)

SERVE_SETTINGS = (
    Setting("--address", "HOST:PORT to listen on", _address, default_of("address"), metavar="HOST:PORT"),
    Setting(
        "--http-address",
        "HOST:PORT to serve HTTP/JSON and the web console on, with the same tokens and TLS as --address",
        _address,
        metavar="HOST:PORT",
    ),
    *DATABASE_SETTINGS,
    Setting("--no-auth", "accept calls without a token (loopback only, unless --insecure)", switch=True),
    Setting("--insecure", "allow --no-auth on an address beyond loopback", switch=True),
    Setting("--tls-cert", "PEM certificate chain of the server", _existing_file, metavar="FILE"),
    Setting("--tls-key", "PEM private key of the server", _existing_file, metavar="FILE"),
    Setting("--tls-client-ca", "PEM CA for mutual TLS", _existing_file, metavar="FILE"),
    Setting(
        "--metrics-address",
        "HOST:PORT of the Prometheus endpoint, which has no auth (loopback only, unless --metrics-insecure)",
        _address,
        metavar="HOST:PORT",
    ),
    Setting("--metrics-insecure", "allow --metrics-address beyond loopback", switch=True),
    Setting(
        "--workers",
        "server processes on the one port; default: one per core, less one for an embedded Postgres",
        _positive_count,
        metavar="N",
    ),
    Setting(
        "--access-log-sample",
        "share of successful calls written to the access log (0 to 1); failed calls are always written",
        _fraction,
        default_of("access_log_sample"),
        metavar="F",
    ),
    Setting(
        "--shutdown-grace",
        "seconds in-flight calls get to finish on SIGTERM",
        _seconds,
        default_of("shutdown_grace"),
        metavar="S",
    ),
    Setting(
        "--max-connection-age",
        "seconds a client connection lives before the server asks it to reconnect (0: forever)",
        _seconds,
        default_of("max_connection_age"),
        metavar="S",
    ),
    Setting(
        "--max-connection-age-grace",
        "seconds calls in flight on a connection asked to reconnect get to finish",
        _seconds,
        default_of("max_connection_age_grace"),
        metavar="S",
    ),
    Setting(
        "--log-level", f"one of {', '.join(LOG_LEVELS)}", _log_level, default_of("log_level"), metavar="LEVEL"
    ),
    Setting(
        "--log-retention-days",
        "days log events are kept; older daily partitions are dropped (0 keeps everything)",
        _count,
        default_of("log_retention_days"),
        metavar="DAYS",
    ),
    Setting(
        "--log-partition-lead-days",
        "days of log partitions created ahead",
        _count,
        default_of("log_partition_lead_days"),
        metavar="DAYS",
    ),
    Setting(
        "--log-stream-queue",
        "batches one StreamLogEvents call queues before it stops reading (flow control)",
        _positive_count,
        default_of("log_stream_queue_batches"),
        metavar="BATCHES",
    ),
)


def _add_settings(parser: argparse.ArgumentParser, settings: Sequence[Setting]) -> None:
    for setting in settings:
        default = "" if setting.default is None else f"; default {setting.default}"
        help_text = f"{setting.help} [env {setting.env}{default}]"
        if setting.switch:
            parser.add_argument(setting.flag, action="store_true", default=None, help=help_text)
        else:
            parser.add_argument(
                setting.flag, type=setting.convert, default=None, metavar=setting.metavar, help=help_text
            )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="A gRPC control plane for AI models.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the server until SIGTERM")
    _add_settings(serve, SERVE_SETTINGS)
    serve.set_defaults(settings=SERVE_SETTINGS, run=_serve)

    migrate_cmd = commands.add_parser("migrate", help="apply the database migrations and exit")
    _add_settings(migrate_cmd, DATABASE_SETTINGS)
    migrate_cmd.set_defaults(settings=DATABASE_SETTINGS, run=_migrate)

    export = commands.add_parser(
        "export-otlp", help="send stored log events on to an OTLP/gRPC receiver, resuming where it stopped"
    )
    export.add_argument(
        "--endpoint",
        default=None,
        metavar="URL",
        help="http://HOST:PORT (plaintext) or https://HOST:PORT of the receiver; default"
        " OTEL_EXPORTER_OTLP_LOGS_ENDPOINT, else OTEL_EXPORTER_OTLP_ENDPOINT",
    )
    export.add_argument(
        "--position-file",
        required=True,
        type=Path,
        metavar="FILE",
        help="where the export's position is kept; a run goes on from it",
    )
    export.add_argument(
        "--from-oldest",
        action="store_true",
        help="without a position file, start at the oldest event the commit feed keeps (a day), not now",
    )
    export.add_argument("--follow", action="store_true", help="keep exporting events as they commit")
    export.add_argument("--filter", default="", help="export only the events matching this filter")
    export.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="gRPC metadata for the receiver; repeat for more; default OTEL_EXPORTER_OTLP_HEADERS",
    )
    _add_settings(export, DATABASE_SETTINGS)
    export.set_defaults(settings=DATABASE_SETTINGS, run=_export_otlp)

    token = commands.add_parser("token", help="manage bearer tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")

    create = token_commands.add_parser("create", help="create a token and print its secret once")
    create.add_argument("--name", required=True, help="who uses the token; shown as the actor in audit logs")
    create.add_argument("--role", required=True, help=f"one of {', '.join(role.value for role in Role)}")
    create.add_argument(
        "--scope",
        action="append",
        default=[],
        metavar="KIND/NAME",
        help="limit the token to this deployment, model or log service (deployments/web, models/chat-large,"
        " services/checkout); repeat for more; without it the token may name any",
    )
    _add_settings(create, DATABASE_SETTINGS)
    create.set_defaults(settings=DATABASE_SETTINGS, run=_token_create)

    list_cmd = token_commands.add_parser("list", help="list tokens, revoked ones included")
    _add_settings(list_cmd, DATABASE_SETTINGS)
    list_cmd.set_defaults(settings=DATABASE_SETTINGS, run=_token_list)

    revoke = token_commands.add_parser("revoke", help="revoke a token by name or id")
    revoke.add_argument("name_or_id", metavar="NAME_OR_ID")
    _add_settings(revoke, DATABASE_SETTINGS)
    revoke.set_defaults(settings=DATABASE_SETTINGS, run=_token_revoke)
    return parser


def apply_environment(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    """Fills every flag not given on the command line from its variable, else from its default."""
    for setting in args.settings:
        if getattr(args, setting.dest) is not None:
            continue
        raw = environ.get(setting.env)
        if raw is None or (raw == "" and not setting.switch):
            value = False if setting.switch and setting.default is None else setting.default
        else:
            try:
                value = (_switch if setting.switch else setting.convert)(raw)
            except (argparse.ArgumentTypeError, ValueError) as exc:
                raise UsageError(f"{setting.env}: {exc}") from None
        setattr(args, setting.dest, value)


def server_config(args: argparse.Namespace) -> ServerConfig:
    """The ServerConfig of a parsed `serve` command; UsageError on a combination that makes no sense."""
    tls = None
    if args.tls_cert is not None or args.tls_key is not None:
        if args.tls_cert is None or args.tls_key is None:
            raise UsageError("--tls-cert and --tls-key go together")
        tls = TlsConfig(cert_file=args.tls_cert, key_file=args.tls_key, client_ca_file=args.tls_client_ca)
    elif args.tls_client_ca is not None:
        raise UsageError("--tls-client-ca needs --tls-cert and --tls-key")
    try:
        return ServerConfig(
            address=args.address,
            http_address=args.http_address,
            database_url=args.database_url or None,
            data_dir=args.data_dir,
            create_database=args.create_database,
            auth=not args.no_auth,
            insecure=args.insecure,
            tls=tls,
            metrics_address=args.metrics_address,
            metrics_insecure=args.metrics_insecure,
            shutdown_grace=args.shutdown_grace,
            max_connection_age=args.max_connection_age,
            max_connection_age_grace=args.max_connection_age_grace,
            log_level=args.log_level,
            log_retention_days=args.log_retention_days,
            log_partition_lead_days=args.log_partition_lead_days,
            log_stream_queue_batches=args.log_stream_queue,
            workers=args.workers,
            access_log_sample=args.access_log_sample,
        )
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


@contextmanager
def _server_extra(extra: str = "server") -> Iterator[None]:
    """Turns a missing third-party module, imported inside the block, into one line naming the extra
    that brings it; a missing module of modelplane itself is a bug and keeps its traceback."""
    try:
        yield
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.partition(".")[0] == "modelplane":
            raise
        raise CommandFailed(
            f"this command needs {exc.name}, which this install lacks: pip install 'modelplane[{extra}]'"
        ) from None


def _serve(args: argparse.Namespace) -> int:
    config = server_config(args)
    with _server_extra():
        from modelplane.server.app import ListenError, serve
    if config.http_address is not None:
        with _server_extra("http"):
            import modelplane.server.http.listener  # noqa: F401 - only to say early that the extra is missing
    from modelplane.server.store.embedded import EmbeddedPostgresError
    from modelplane.server.tracing import TracingError, provider_from_environment
    from modelplane.server.workers import WorkersError

    try:
        # Checked before anything starts: a tracing setup that cannot run is said in one line, once.
        checked = provider_from_environment()
        if checked is not None:
            checked.shutdown()
        serve(config)
    except (ListenError, EmbeddedPostgresError, WorkersError, TracingError, OSError) as exc:
        # An address taken, the embedded Postgres unable to run, an unreadable TLS file, workers that do not
        # fit Postgres's connection limit: one line each;
        # the traceback goes to the log at DEBUG.
        log.debug("serve failed", exc_info=True)
        raise CommandFailed(str(exc)) from None
    return 0


@contextmanager
def _database_url(args: argparse.Namespace) -> Iterator[str]:
    """The URL to use; without one, the embedded Postgres of --data-dir (the one `serve` uses, shared
    with it when it runs), running while the block runs."""
    if args.database_url:
        yield args.database_url
        return
    from modelplane.server.store.embedded import EmbeddedPostgresError, start_embedded

    try:
        embedded = start_embedded(args.data_dir)
    except EmbeddedPostgresError as exc:
        raise CommandFailed(str(exc)) from None
    yield embedded.url


async def _migrated(
    url: str, action: Callable[[Connection], Awaitable[T]], *, create_database: bool = False
) -> T:
    """Migrates the database at `url` (creating it first when told to), then runs `action` in one
    transaction."""
    from modelplane.server.store.migrations import migrate
    from modelplane.server.store.pool import Database, PoolSettings
    from modelplane.server.store.provision import DatabaseMissing
    from modelplane.server.store.provision import create_database as create

    # One connection is all a command needs; the longer timeouts suit a human at a terminal.
    database = Database(url, PoolSettings(min_size=1, max_size=1, connect_timeout=5.0, acquire_timeout=5.0))
    try:
        await database.open()
    except DatabaseMissing:
        if not create_database:
            raise
        await create(url)
        await database.open()
    try:
        async with database.connection() as conn:
            await migrate(conn)
        async with database.transaction() as conn:
            return await action(conn)
    finally:
        await database.close()


def _with_database(args: argparse.Namespace, action: Callable[[Connection], Awaitable[T]]) -> T:
    with _server_extra():
        from modelplane.server.auth.store import DATABASE_ERRORS
        from modelplane.server.store.migrations import MigrationError
        from modelplane.server.store.provision import DatabaseMissing
    try:
        with _database_url(args) as url:
            return asyncio.run(_migrated(url, action, create_database=args.create_database))
    except (DatabaseMissing, MigrationError) as exc:
        raise CommandFailed(str(exc)) from None
    except DATABASE_ERRORS as exc:
        log.debug("database error", exc_info=True)
        raise CommandFailed(f"cannot use the database: {exc}") from None


def _migrate(args: argparse.Namespace) -> int:
    async def nothing(conn: Connection) -> None:
        return None

    _with_database(args, nothing)
    from modelplane.server.store.migrations import latest_version

    print(f"schema is at version {latest_version()}")
    return 0


def _export_otlp(args: argparse.Namespace) -> int:
    with _server_extra():
        from modelplane.server.logs.otlp_export import ExportError, export_events, parse_headers
    endpoint = (
        args.endpoint
        or os.environ.get("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )
    if not endpoint:
        raise UsageError("--endpoint (or OTEL_EXPORTER_OTLP_ENDPOINT) names the receiver")
    try:
        headers = parse_headers(",".join(args.header) or os.environ.get("OTEL_EXPORTER_OTLP_HEADERS", ""))
        with _database_url(args) as url:
            stats = asyncio.run(
                export_events(
                    url,
                    endpoint,
                    args.position_file,
                    headers=headers,
                    filter_text=args.filter,
                    follow=args.follow,
                    from_oldest=args.from_oldest,
                )
            )
    except ExportError as exc:
        raise CommandFailed(str(exc)) from None
    print(
        f"exported {stats.exported} events in {stats.requests} requests"
        f" ({stats.rejected} rejected by the receiver)"
    )
    return 0


def _token_create(args: argparse.Namespace) -> int:
    with _server_extra():
        from modelplane.server.auth.store import create_token

    async def create(conn: Connection) -> tuple[TokenInfo, str]:
        return await create_token(conn, args.name, args.role, args.scope)

    token, secret = _with_database(args, create)
    # The secret alone on stdout, so `TOKEN=$(modelplane token create ...)` captures just it.
    print(secret)
    print(
        f"created token {token.name!r} ({token.id}, role {token.role.value});"
        " store it now: it will not be shown again",
        file=sys.stderr,
    )
    return 0


def _timestamp(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_tokens(tokens: Sequence[TokenInfo]) -> str:
    """A plain-text table: id, name, role, created, revoked, scopes ("*" for an unscoped token)."""
    rows = [("ID", "NAME", "ROLE", "CREATED", "REVOKED", "SCOPES")]
    rows.extend(
        (
            t.id,
            t.name,
            t.role.value,
            _timestamp(t.create_time),
            _timestamp(t.revoke_time),
            ",".join(t.scopes) or "*",
        )
        for t in tokens
    )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def _token_list(args: argparse.Namespace) -> int:
    with _server_extra():
        from modelplane.server.auth.store import list_tokens
    tokens = _with_database(args, list_tokens)
    print(format_tokens(tokens))
    return 0


def _token_revoke(args: argparse.Namespace) -> int:
    with _server_extra():
        from modelplane.server.auth.store import revoke_token

    async def revoke(conn: Connection) -> TokenInfo:
        return await revoke_token(conn, args.name_or_id)

    token = _with_database(args, revoke)
    print(f"revoked token {token.name!r} ({token.id}) at {_timestamp(token.revoke_time)}")
    return 0


def _fail(code: int, message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Runs one command; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        apply_environment(args, os.environ if environ is None else environ)
        run: Callable[[argparse.Namespace], int] = args.run
        return run(args)
    except UsageError as exc:
        return _fail(EXIT_USAGE, str(exc))
    except (InvalidArgument, AlreadyExists, NotFound) as exc:
        return _fail(EXIT_USAGE, exc.message)
    except ModelplaneError as exc:
        return _fail(EXIT_FAILURE, exc.message)
    except CommandFailed as exc:
        return _fail(EXIT_FAILURE, str(exc))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
