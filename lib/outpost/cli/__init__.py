"""The `outpost` command: the local stack and the administrator's tools."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from outpost.errors import ConfigurationError, OutpostError

DEFAULT_NAME = "<default>"  # how `services list` shows a user's default server (the empty name)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="outpost", description="Outpost Functions for JupyterHub")
    env_file_help = "read OUTPOST_* settings from this file first (`outpost dev` writes <data dir>/env)"
    parser.add_argument("--env-file", type=Path, default=None, help=env_file_help)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=None, help="YAML configuration (the Helm values' keys)")
    # Also after the command (`outpost check --env-file F`); SUPPRESS keeps a value given before it.
    common.add_argument("--env-file", type=Path, default=argparse.SUPPRESS, help=env_file_help)
    commands = parser.add_subparsers(dest="command", required=True)
    dev = commands.add_parser("dev", parents=[common], help="run the whole stack locally")
    dev.add_argument("--api-host", default="127.0.0.1", help="address of the API and SSH daemon (127.0.0.1)")
    dev.add_argument("--api-port", type=int, default=8080, help="API port (default 8080)")
    dev.add_argument("--ssh-port", type=int, default=2222, help="SSH daemon port (default 2222)")
    dev.add_argument("--data-dir", type=Path, default=Path(".outpost"), help="state directory (default .outpost)")
    backends = ["local", "kubernetes", "slurm", "spawner"]
    dev.add_argument("--backend", default="local", choices=backends, help="where servers run (default local)")
    dev.add_argument(
        "--keep-servers", action="store_true", help="leave servers running at exit; the next start adopts them"
    )
    dev.add_argument(
        "--rotate-key", action="store_true", help="new encryption key: re-encrypt every record before serving"
    )
    function = commands.add_parser(
        "serve-function", help="serve one function as its container does (functions-framework, API limits)"
    )
    function.add_argument("--target", default=os.environ.get("FUNCTION_TARGET"), help="$FUNCTION_TARGET")
    function.add_argument("--source", default=os.environ.get("FUNCTION_SOURCE"), help="$FUNCTION_SOURCE")
    function.add_argument("--host", default=os.environ.get("HOST", "0.0.0.0"), help="$HOST (0.0.0.0)")
    function.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")), help="$PORT (8080)")
    commands.add_parser("check", parents=[common], help="validate configuration, secrets, Redis and the backend")
    commands.add_parser("rotate-key", parents=[common], help="re-encrypt every record under the first key")
    migrate = commands.add_parser(
        "import-upstream", parents=[common], help="take over the running servers of an upstream Outpost"
    )
    migrate.add_argument("--database", default=None, help="its database URL (default: its SQL_* variables)")
    migrate.add_argument("--dry-run", action="store_true", help="show what would be imported, write nothing")
    services = commands.add_parser("services", help="list, show or stop services").add_subparsers(
        dest="action", required=True
    )
    listing = services.add_parser("list", parents=[common], help="services of all hubs, or of one")
    listing.add_argument("--hub", default=None)
    for action in ("show", "stop"):
        one = services.add_parser(action, parents=[common], help=f"{action} one service")
        one.add_argument("hub")
        one.add_argument("name", help=f"server name ('' or {DEFAULT_NAME} for a default server)")
        one.add_argument("start_id")
    return parser


async def _admin(args: argparse.Namespace) -> int:
    from outpost import rotation
    from outpost.cli import admin
    from outpost.models import ServiceId
    from outpost.runtime import build_runtime
    from outpost.settings import load_settings

    if args.command == "check":
        return 0 if await admin.check(args.config, print) else 1
    settings = load_settings(args.config)
    if args.command == "rotate-key":
        admin.refuse_rotation_under_dev(settings)
    runtime = build_runtime(settings)
    try:
        if args.command == "rotate-key":
            await rotation.rotate_keys(runtime.store, print)
            print(admin.AFTER_ROTATION)
        elif args.command == "import-upstream":
            from outpost.cli.upstream_import import database_url, import_upstream

            url = database_url(runtime.settings, args.database)
            summary = await import_upstream(
                runtime, url, dry_run=args.dry_run, out=lambda line: print(line, flush=True)
            )
            return 1 if summary.unreadable or summary.refused or summary.conflicts else 0
        elif args.action == "list":
            print(await admin.list_services(runtime, args.hub))
        else:
            name = "" if args.name == DEFAULT_NAME else args.name
            sid = ServiceId(args.hub, name, args.start_id)
            action = admin.show_service if args.action == "show" else admin.stop_service
            print(await action(runtime, sid))
    finally:
        await runtime.aclose()
    return 0


def _dev(args: argparse.Namespace) -> int:
    from outpost.cli.dev import DevOptions, run_dev

    options = DevOptions(
        api_host=args.api_host, api_port=args.api_port, ssh_port=args.ssh_port,
        data_dir=args.data_dir.resolve(), config_file=args.config, backend=args.backend,
        keep_servers=args.keep_servers, rotate_key=args.rotate_key,
    )  # fmt: skip
    return asyncio.run(run_dev(options))


def _serve_function(args: argparse.Namespace) -> int:
    from outpost.cli.functions_server import serve_function

    if not args.target or not args.source:
        raise ConfigurationError("serve-function: set FUNCTION_TARGET and FUNCTION_SOURCE (or --target, --source)")
    serve_function(args.target, args.source, args.host, args.port)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.env_file is not None:
            from outpost.cli import envfile

            envfile.load(args.env_file)
        if args.command == "dev":  # logs as its settings say (OUTPOST_LOG_FORMAT), once they are read
            return _dev(args)
        if args.command == "serve-function":
            return _serve_function(args)
        from outpost import logs

        logs.configure(json_format=False)  # a terminal's tool: the text form of the one log format
        return asyncio.run(_admin(args))
    except OutpostError as exc:  # start-up and administration failures: one line, never a traceback
        print(f"outpost: {exc.message}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigurationError) else 1
    except KeyboardInterrupt:  # before `outpost dev` handles signals itself, or in an admin command
        return 130
