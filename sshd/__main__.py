"""`python -m sshd [--config values.yaml]`: the SSH daemon as its own process, on uvloop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import uvloop
from redis.exceptions import RedisError

from outpost import logs
from outpost.errors import OutpostError
from outpost.runtime import Runtime, build_runtime
from outpost.settings import Settings, load_settings
from sshd.metrics import serve_metrics
from sshd.server import serve
from sshd.tunnels import recreate_configured

logger = logging.getLogger("sshd")
METRICS_PORT = 9090


@contextlib.asynccontextmanager
async def connect(settings: Settings) -> AsyncIterator[Runtime]:
    """The store and hub client (`outpost.runtime`), checked at start and closed on exit."""
    runtime = build_runtime(settings)
    try:
        await runtime.store.ping()  # fail at start, not at the first forward
        yield runtime
    finally:
        await runtime.aclose()


async def run(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT; ask the hubs to rebuild their tunnels once listening."""
    async with connect(settings) as runtime:
        listener = await serve(settings, runtime.store)
        # What is built by now (modules, settings, clients, the listener) lives as long as the
        # process: out of the collector's way, collections during forwarding stay short.
        gc.freeze()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        # This daemon, as the other daemons sharing the Redis see it: the pod's name (host) and port.
        claimer = f"{socket.gethostname()}:{listener.port}"
        recreation = asyncio.create_task(recreate_configured(runtime, claimer=claimer))
        recreation.add_done_callback(_log_failure)
        try:
            await stop.wait()
        finally:
            logger.info("sshd stopping")
            recreation.cancel()
            listener.close()
            await listener.wait_closed()


def _log_failure(task: asyncio.Task[object]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("tunnel recreation stopped: %s", type(task.exception()).__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sshd", description=__doc__)
    parser.add_argument("--config", type=Path, help="YAML values file (default: $OUTPOST_CONFIG)")
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=METRICS_PORT,
        help=f"Prometheus /metrics port; 0: off (default {METRICS_PORT})",
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
        logs.configure(json_format=settings.log_format == "json")
        if args.metrics_port:
            try:
                serve_metrics(args.metrics_port)
            except OSError as exc:  # forwarding matters more than its metrics
                logger.warning("no /metrics: port %d: %s", args.metrics_port, exc.strerror)
        uvloop.run(run(settings))
    except (OSError, asyncssh.Error, RedisError, OutpostError) as exc:
        print(f"sshd: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
