"""`python -m sshd` as its own process: serves on uvloop, recreates tunnels, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from outpost.store import Store
from tests.sshd.helpers import (
    CRYPT_KEY,
    ClientKey,
    DaemonProcess,
    OpenSSHFactory,
    Target,
    exchange,
    forward,
    free_port,
    run_service,
    start_daemon_process,
    until,
)


@pytest_asyncio.fixture
async def run_daemon(tmp_path: Path) -> AsyncIterator[Any]:
    """Run `python -m sshd --config <values.yaml>`; killed at teardown if still running."""
    daemons: list[DaemonProcess] = []

    async def run(values: dict[str, Any], *args: str) -> DaemonProcess:
        daemon = await start_daemon_process(tmp_path / f"values-{len(daemons)}.yaml", values, *args)
        daemons.append(daemon)
        return daemon

    yield run
    for daemon in daemons:
        await daemon.stop()


def values(redis_url: str, tmp_path: Path, key: ClientKey, **extra: Any) -> dict[str, Any]:
    return {
        "cryptKey": CRYPT_KEY,
        "redisUrl": redis_url,
        "sshListenHost": "127.0.0.1",
        "sshPort": 0,
        "sshHostKey": str(tmp_path / "host_key"),
        "sshPublicKeys": [{"hub": "a", "key": key.public}],
        "hubRetries": 1,
        **extra,
    }


@pytest.mark.asyncio
async def test_daemon_process_forwards_and_recreates_tunnels(
    run_daemon: Any,
    redis_url: str,
    tmp_path: Path,
    client_keys: dict[str, ClientKey],
    store: Store,
    echo_server: Target,
    hub_receiver: Any,
    openssh: OpenSSHFactory,
) -> None:
    """At start the daemon asks the hub to rebuild the tunnel of each running service it had; the hub's
    forward then works; SIGTERM ends the daemon cleanly and drops its connections."""
    setup = f"{hub_receiver.url}/hub/api/users/setuptunnel/alice/lab"
    env = {"JUPYTERHUB_SETUPTUNNEL_URL": setup, "JUPYTERHUB_API_TOKEN": "token-for-alice"}
    await store.mark_tunnelled(await run_service(store, "a", "lab", echo_server.address, env=env))

    metrics_port = free_port()
    daemon = await run_daemon(values(redis_url, tmp_path, client_keys["hub_a"]), "--metrics-port", str(metrics_port))
    await until(lambda: "sshd listening on" in daemon.text, timeout=15, what=f"the daemon to listen:\n{daemon.text}")
    port = int(re.findall(r"sshd listening on 127\.0\.0\.1:(\d+)", daemon.text)[0])

    await until(lambda: bool(hub_receiver.calls), timeout=10, what="the setup-tunnel call")
    assert hub_receiver.calls == [
        {
            "path": "/hub/api/users/setuptunnel/alice/lab",
            "authorization": "token token-for-alice",
            "json": {"service": f"http://{echo_server.address}"},
        }
    ]

    client = openssh(port, "hub_a")
    assert (await client.start_master()).returncode == 0
    assert await exchange(await forward(client, echo_server), b"through the process") == b"through the process"

    async with httpx.AsyncClient() as http:
        for _ in range(100):  # until the forward has closed (its bytes are counted then), 10 s at most
            scraped = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
            if "outpost_sshd_forwards_open 0.0" in scraped:
                break
            await asyncio.sleep(0.1)
    assert "outpost_sshd_forwards_total 1.0" in scraped
    assert 'outpost_sshd_forward_bytes_total{direction="down"} 19.0' in scraped
    assert 'outpost_sshd_tunnel_recreations_total{outcome="posted"} 1.0' in scraped

    daemon.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(daemon.proc.wait(), 10) == 0
    await until(lambda: not client.control_path.exists(), timeout=10, what="the master to notice")
    assert "token-for-alice" not in daemon.text and "setuptunnel" not in daemon.text
    assert "forward opened hub=a service=lab/1" in daemon.text
    assert "forwards hub=a service=lab/1" in daemon.text  # the closed connection's summary
    assert "Accepted direct TCP connection" not in daemon.text  # asyncssh's own per-channel lines are off


@pytest.mark.asyncio
async def test_port_in_use_exits_with_a_message(
    run_daemon: Any, redis_url: str, tmp_path: Path, client_keys: dict[str, ClientKey]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        daemon = await run_daemon(values(redis_url, tmp_path, client_keys["hub_a"], sshPort=busy.getsockname()[1]))
        assert await asyncio.wait_for(daemon.proc.wait(), 20) == 1
    await until(lambda: "sshd: " in daemon.text, what=f"the message: {daemon.lines}")
    assert "address already in use" in daemon.text.lower()
    assert "Traceback" not in daemon.text


@pytest.mark.asyncio
async def test_bad_configuration_exits_with_a_message(
    run_daemon: Any, redis_url: str, tmp_path: Path, client_keys: dict[str, ClientKey]
) -> None:
    bad = values(redis_url, tmp_path, client_keys["hub_a"], sshPublicKeys=["ssh-ed25519 not-a-key"])
    daemon = await run_daemon(bad)
    assert await asyncio.wait_for(daemon.proc.wait(), 20) == 1
    await until(lambda: "sshd: " in daemon.text, what=f"the message: {daemon.lines}")
    assert "sshPublicKeys[0]" in daemon.text
    assert "Traceback" not in daemon.text


@pytest.mark.asyncio
async def test_busy_metrics_port_is_not_fatal(
    run_daemon: Any, redis_url: str, tmp_path: Path, client_keys: dict[str, ClientKey]
) -> None:
    """Forwarding matters more than metrics: a taken metrics port is logged, and the daemon serves."""
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        daemon = await run_daemon(values(redis_url, tmp_path, client_keys["hub_a"]), "--metrics-port", port)
        await until(
            lambda: "sshd listening on" in daemon.text, timeout=15, what=f"the daemon to listen:\n{daemon.text}"
        )
    assert f"no /metrics: port {port}" in daemon.text
    assert daemon.proc.returncode is None


@pytest.mark.asyncio
async def test_the_process_logs_each_key_with_its_options_once(
    run_daemon: Any, redis_url: str, tmp_path: Path, client_keys: dict[str, ClientKey]
) -> None:
    """The upstream docs' option-prefixed line, for one hub and plain: one start-up line each, no key material."""
    line = f'restrict,port-forwarding,command="/bin/echo No commands allowed" {client_keys["hub_a"].public}'
    daemon = await run_daemon(
        values(redis_url, tmp_path, client_keys["hub_a"], sshPublicKeys=[{"hub": "a", "key": line}, line])
    )
    await until(lambda: "sshd listening on" in daemon.text, timeout=15, what=f"the daemon to listen:\n{daemon.text}")
    described = [text for text in daemon.lines if "authorized sshPublicKeys[" in text]
    assert len(described) == 2 and "hub=a options=restrict,port-forwarding,command" in described[0]
    assert "hub=* options=restrict" in described[1]
    assert client_keys["hub_a"].public.split()[1] not in daemon.text and "No commands" not in daemon.text


@pytest.mark.asyncio
async def test_an_option_it_cannot_honour_stops_the_process(
    run_daemon: Any, redis_url: str, tmp_path: Path, client_keys: dict[str, ClientKey]
) -> None:
    """A misspelt `from=` would leave the key unpinned: the daemon refuses to start and names the entry."""
    line = f'form="10.0.0.0/8" {client_keys["hub_a"].public}'
    daemon = await run_daemon(values(redis_url, tmp_path, client_keys["hub_a"], sshPublicKeys=[line]))
    assert await asyncio.wait_for(daemon.proc.wait(), 20) == 1
    await until(lambda: "sshd: " in daemon.text, what=f"the message: {daemon.lines}")
    assert "sshPublicKeys[0]: not an authorized_keys line (unsupported option(s): form)" in daemon.text
    assert "Traceback" not in daemon.text
