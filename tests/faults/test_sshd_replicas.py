"""Several SSH daemons behind one Service (chart: sshd.replicas > 1) share one Redis: when they start
together, each running service's setup-tunnel is POSTed once between them, not once per daemon; a daemon
that restarts posts again, since the tunnels through it died with it.

Real processes: two `python -m sshd` on their own loopback ports, the shared test Redis, and the hub's
setup-tunnel endpoint as a real HTTP server recording every call.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from outpost.crypto import Crypt
from outpost.settings import Settings
from outpost.store import Store
from tests.conftest import HubReceiver
from tests.sshd.helpers import DaemonProcess, free_port, run_service, start_daemon_process

pytestmark = pytest.mark.asyncio(loop_scope="session")

SERVICES = 12
RECREATED = r"tunnel recreation done posted=(\d+) failed=(\d+) skipped=(\d+) elsewhere=(\d+)"


async def recreation_counts(daemon: DaemonProcess, generation: int = 1) -> tuple[int, ...]:
    """posted, failed, skipped, elsewhere of the daemon's `generation`-th recreation."""
    await daemon.wait_for(rf"(?s)({RECREATED}.*){{{generation}}}")
    return tuple(int(n) for n in re.findall(RECREATED, daemon.text)[generation - 1])


async def test_two_daemons_starting_together_recreate_each_tunnel_once(
    settings: Settings, redis: aioredis.Redis, redis_url: str, hub_receiver: HubReceiver, tmp_path: Path
) -> None:
    store = Store(redis, Crypt(settings.crypt_keys()))
    paths = [f"/hub/api/users/setuptunnel/user{i}/lab{i}" for i in range(SERVICES)]
    for i, path in enumerate(paths):
        env = {"JUPYTERHUB_SETUPTUNNEL_URL": f"{hub_receiver.url}{path}", "JUPYTERHUB_API_TOKEN": f"token-{i}"}
        sid = await run_service(store, "hubA", f"lab{i}", f"127.0.0.1:{20000 + i}", env=env)
        await store.mark_tunnelled(sid)  # the hub tunnelled to each through the daemons' predecessor

    def values(name: str) -> dict[str, object]:
        return {
            "cryptKey": settings.crypt_key.get_secret_value(),
            "redisUrl": redis_url,
            "sshListenHost": "127.0.0.1",
            "sshPort": free_port(),
            "sshHostKey": str(tmp_path / name / "host_key"),
            "hubRetries": 1,
            "hubTimeoutSeconds": 2.0,
        }

    first_values, second_values = values("a"), values("b")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    daemons: list[DaemonProcess] = []
    try:
        daemons += await asyncio.gather(
            start_daemon_process(tmp_path / "a" / "values.yaml", first_values),
            start_daemon_process(tmp_path / "b" / "values.yaml", second_values),
        )
        first, second = daemons
        a, b = await asyncio.gather(recreation_counts(first), recreation_counts(second))
        calls = Counter(c["path"] for c in hub_receiver.calls)
        print(f"\ntwo daemons started together: posted {a[0]} + {b[0]}, left to the other {a[3]} + {b[3]}")
        assert calls == Counter(paths)  # every tunnel recreated, each exactly once
        assert a[0] + b[0] == SERVICES and a[3] + b[3] == SERVICES
        assert a[1] == b[1] == 0 and a[2] == b[2] == 0

        # The first daemon restarts (same host and port): its tunnels died, so it posts its own again,
        # and leaves those the other daemon claimed moments ago to that one.
        await first.stop()
        restarted = await start_daemon_process(tmp_path / "a" / "values.yaml", first_values)
        daemons.append(restarted)
        again = await recreation_counts(restarted)
        assert again == (a[0], 0, 0, b[0])
        assert sum(Counter(c["path"] for c in hub_receiver.calls).values()) == SERVICES + a[0]
        for daemon in daemons:
            assert "token-" not in daemon.text and "setuptunnel" not in daemon.text
    finally:
        for daemon in daemons:
            await daemon.stop()
