"""The `outpost` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from outpost.errors import ConfigurationError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="outpost", description="Outpost Functions for JupyterHub")
    commands = parser.add_subparsers(dest="command", required=True)
    dev = commands.add_parser("dev", help="run the whole stack locally")
    dev.add_argument("--api-host", default="127.0.0.1", help="address of the API (default 127.0.0.1)")
    dev.add_argument("--api-port", type=int, default=8080, help="API port (default 8080)")
    dev.add_argument("--ssh-port", type=int, default=2222, help="SSH daemon port (default 2222)")
    dev.add_argument(
        "--data-dir", type=Path, default=Path(".outpost"), help="state directory (default .outpost)"
    )
    dev.add_argument("--config", type=Path, default=None, help="YAML configuration (the Helm values' keys)")
    dev.add_argument(
        "--backend", default="local", choices=["local"], help="where servers run (default local)"
    )
    return parser


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
    except ConfigurationError as exc:
        print(f"outpost: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
