"""The `outpost` command: the local stack and the administrator's tools."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from outpost.errors import ConfigurationError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="outpost", description="Outpost Functions for JupyterHub")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=None, help="YAML configuration (the Helm values' keys)")
    commands = parser.add_subparsers(dest="command", required=True)
    dev = commands.add_parser("dev", parents=[common], help="run the whole stack locally")
    dev.add_argument("--api-host", default="127.0.0.1", help="address of the API and SSH daemon (127.0.0.1)")
    dev.add_argument("--api-port", type=int, default=8080, help="API port (default 8080)")
    dev.add_argument("--ssh-port", type=int, default=2222, help="SSH daemon port (default 2222)")
    dev.add_argument("--data-dir", type=Path, default=Path(".outpost"), help="state directory (default .outpost)")
    backends = ["local", "kubernetes", "spawner"]
    dev.add_argument("--backend", default="local", choices=backends, help="where servers run (default local)")
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
        one.add_argument("name", help="server name ('' for a default server)")
        one.add_argument("start_id")
    return parser


async def _admin(args: argparse.Namespace) -> int:
    from outpost import admin
    from outpost.models import ServiceId
    from outpost.runtime import build_runtime
    from outpost.settings import load_settings

    if args.command == "check":
        return 0 if await admin.check(args.config, print) else 1
    runtime = build_runtime(load_settings(args.config))
    try:
        if args.command == "rotate-key":
            await admin.rotate_keys(runtime, print)
        elif args.command == "import-upstream":
            from outpost.upstream_import import database_url, import_upstream

            url = database_url(runtime.settings, args.database)
            summary = await import_upstream(
                runtime, url, dry_run=args.dry_run, out=lambda line: print(line, flush=True)
            )
            return 1 if summary.unreadable or summary.conflicts else 0
        elif args.action == "list":
            print(await admin.list_services(runtime, args.hub))
        else:
            sid = ServiceId(args.hub, args.name, args.start_id)
            action = admin.show_service if args.action == "show" else admin.stop_service
            print(await action(runtime, sid))
    finally:
        await runtime.aclose()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "dev":
            from outpost.dev import DevOptions, run_dev

            options = DevOptions(
                api_host=args.api_host, api_port=args.api_port, ssh_port=args.ssh_port,
                data_dir=args.data_dir.resolve(), config_file=args.config, backend=args.backend,
            )  # fmt: skip
            asyncio.run(run_dev(options))
            return 0
        return asyncio.run(_admin(args))
    except ConfigurationError as exc:
        print(f"outpost: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
