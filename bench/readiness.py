"""Start overhead (issue 24): how long after its server listens a start answers.

The server is a perl one-liner that listens where JUPYTERHUB_SERVICE_URL says after a delay chosen by
its port (0, 30, 120 or 350 ms, so the moment falls anywhere in the readiness check's schedule) and
writes the wall-clock time of its listen() into a file named by its port. Measured, alternating:

  backend  `LocalBackend.start` called directly in this process (uvloop, as in the worker): the
           moment it returns minus the moment the server listened: what detecting readiness (and
           checking the socket is the server's own) costs the backend;
  outpost  a synchronous `POST /services` to the start function: the moment the answer arrives
           minus the moment the server listened: the same plus writing the record and the answer.

Each server is stopped before the next start (one at a time: the figure is the latency of the
check, not of a crowded machine).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.load import percentiles
from bench.stack import RUN_AS_OWN_USER, Stack, basic_auth, say, start_body
from outpost.backends.base import StartSpec
from outpost.models import ServiceId
from outpost.runtime import build_runtime

DELAYS = (0.0, 0.03, 0.12, 0.35)  # seconds before listen(), by port % 4

_SERVER = (
    "use Socket; use Time::HiRes qw(time sleep); "
    "my ($host, $port) = $ENV{JUPYTERHUB_SERVICE_URL} =~ m{//([0-9.]+):([0-9]+)/} or die 'no address'; "
    "sleep((%(delays)s)[$port %% 4]); "
    "socket(my $s, PF_INET, SOCK_STREAM, 0) or die $!; bind($s, sockaddr_in($port, inet_aton($host))) or die $!; "
    "listen($s, 1024) or die $!; my $at = time(); "
    "open(my $f, '>', '%(dir)s/' . $port) or die $!; print $f $at; close $f; sleep 600"
)


def config(path: Path, listen_dir: Path) -> Path:
    """The backend configuration running the server above; it notes its listen() times in `listen_dir`."""
    listen_dir.mkdir(parents=True, exist_ok=True)
    server = _SERVER % {"delays": ", ".join(f"{d:g}" for d in DELAYS), "dir": listen_dir}
    path.write_text(
        f"c.LocalProcessBackend.cmd = ['perl', '-e', {server!r}]\n"
        "c.LocalProcessBackend.start_timeout = 20.0\n"
        "c.LocalProcessBackend.stop_timeout = 2.0\n" + RUN_AS_OWN_USER
    )
    return path


def _listened(listen_dir: Path, address_or_port: str | int) -> float:
    port = str(address_or_port).rsplit(":", 1)[-1].rstrip("/")
    return float((listen_dir / port).read_text())


async def run(
    stack: Stack, start_url: str, stop_url: str, backend_config: Path, listen_dir: Path, *, starts: int
) -> dict[str, Any]:
    runtime = build_runtime(stack.settings(backend_config=backend_config))
    backend = runtime.backend
    auth = {"Authorization": basic_auth("hub2"), "Content-Type": "application/json"}
    samples: dict[str, list[float]] = {"backend": [], "outpost": []}

    async def nothing(*_: Any) -> None:
        return None

    async def via_backend(n: int) -> None:
        body = start_body(f"rd{n}")
        started = await backend.start(StartSpec(ServiceId("direct", f"rd{n}", "1"), body["env"], {}), nothing, nothing)
        returned = time.time()
        samples["backend"].append(returned - _listened(listen_dir, started.state["port"]))
        await backend.stop(started.state)

    async def via_outpost(client: aiohttp.ClientSession, n: int) -> None:
        body = start_body(f"ro{n}")
        body["misc"] = {}
        async with client.post(start_url + "/services", data=json.dumps(body), headers=auth) as response:
            answer = await response.json()
            answered = time.time()
            if response.status != 200:
                raise RuntimeError(f"start answered {response.status}: {answer}")
        samples["outpost"].append(answered - _listened(listen_dir, answer["service"]))
        async with client.delete(f"{stop_url}/services/ro{n}/1", headers=auth) as response:
            await response.read()

    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as client:
            await via_outpost(client, -1)  # warm: the first start loads the backend configuration
            samples["outpost"].clear()
            for n in range(starts):
                for which in ("backend", "outpost") if n % 2 == 0 else ("outpost", "backend"):
                    await (via_backend(n) if which == "backend" else via_outpost(client, n))
    finally:
        await runtime.aclose()
    result = {name: percentiles(values) for name, values in samples.items()}
    say(
        "start after listen: backend p50 {:.1f} ms (max {:.1f}), outpost p50 {:.1f} ms (max {:.1f})".format(
            result["backend"]["p50_ms"], result["backend"]["max_ms"], result["outpost"]["p50_ms"],
            result["outpost"]["max_ms"],
        )
    )  # fmt: skip
    return {"delays_s": list(DELAYS), "starts": starts, **result}
