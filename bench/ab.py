"""A/B: variants of the poll function (library overlays on PYTHONPATH) against the empty function.

    .venv/bin/python -m bench.ab [--variant NAME=PATH[:PATH...]]... [--connections 64] [--rounds 4]

Every variant serves the same running service from the same Redis; rounds visit the empty function
and the variants in rotating order, so noise from the machine falls on all of them. A variant's
PATH entries go first on PYTHONPATH (a patched copy of lib/, a directory with an extra wheel such as
hiredis installed with `pip install --target`). The variant `base` (the checkout) is always run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.load import run_load
from bench.stack import Stack, basic_auth, say, serving, start_body
from bench.throughput import Target, measure


def _env(stack: Stack, overlay: str) -> dict[str, str]:
    env = stack.env()
    if overlay:
        env["PYTHONPATH"] = os.pathsep.join([overlay, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", action="append", default=[], help="NAME=PATH[:PATH...] (repeatable)")
    parser.add_argument("--connections", type=int, action="append", help="default: 64 (repeatable)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--path", default="/services/ab/1", help="request path (default: poll the service)")
    args = parser.parse_args()
    variants = {"base": ""}
    for spec in args.variant:
        name, _, overlay = spec.partition("=")
        variants[name] = overlay
    connections = args.connections or [64]
    workdir = Path(tempfile.mkdtemp(prefix="bench-ab-", dir="/tmp"))
    logs = workdir / "logs"
    stack = Stack(workdir).start()
    rows: dict[tuple[str, int], list[dict[str, Any]]] = {}
    try:
        with ExitStack() as stack_of:
            empty = stack_of.enter_context(serving("empty", stack.env(), logs))
            start = stack_of.enter_context(serving("start", stack.env(), logs))
            stop = stack_of.enter_context(serving("stop", stack.env(), logs))
            polls = {
                name: stack_of.enter_context(serving("poll", _env(stack, overlay), logs))
                for name, overlay in variants.items()
            }
            headers = {"Authorization": basic_auth("hub0")}
            body = json.dumps(start_body("ab")).encode()
            request = urllib.request.Request(
                start.url + "/services",
                data=body,
                method="POST",
                headers={**headers, "Content-Type": "application/json"},
            )
            urllib.request.urlopen(request, timeout=60).read()
            try:
                targets = {"empty": Target("empty", empty, args.path, headers)}
                targets.update({name: Target(name, fn, args.path, headers) for name, fn in polls.items()})
                for name, target in targets.items():
                    say(f"{name}: {target.fetch()[:80]!r}")
                    run_load(target.url, 16, 1.0, headers=headers)
                names = list(targets)
                for round_no in range(args.rounds):
                    order = names[round_no % len(names) :] + names[: round_no % len(names)]
                    for conns in connections:
                        for name in order:
                            row = measure(targets[name], conns, args.duration, False)
                            rows.setdefault((name, conns), []).append(row)
                            say(
                                f"round {round_no + 1} {name:12} c={conns:<3} {row['rps']:7.0f} req/s p99 "
                                f"{row['p99_ms']:7.2f} ms cpu {row['worker_cpu_us_per_request']:5.0f} µs/req"
                            )
            finally:
                request = urllib.request.Request(f"{stop.url}/services/ab/1", method="DELETE", headers=headers)
                urllib.request.urlopen(request, timeout=60).read()
    finally:
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"{'variant':12} {'conns':>5} {'req/s':>8} {'x empty':>8} {'p50 ms':>8} {'p99 ms':>8} {'x empty':>8} "
        f"{'cpu µs/req':>11} {'x empty':>8}"
    )
    for conns in connections:
        med = {
            name: {
                k: statistics.median(r[k] for r in rows[(name, conns)])
                for k in ("rps", "p50_ms", "p99_ms", "worker_cpu_us_per_request")
            }
            for name in ["empty", *variants]
        }
        e = med["empty"]
        for name, m in med.items():
            print(
                f"{name:12} {conns:>5} {m['rps']:8.0f} {m['rps'] / e['rps']:7.2f}x {m['p50_ms']:8.2f} "
                f"{m['p99_ms']:8.2f} {m['p99_ms'] / e['p99_ms']:7.2f}x {m['worker_cpu_us_per_request']:11.0f} "
                f"{m['worker_cpu_us_per_request'] / e['worker_cpu_us_per_request']:7.2f}x"
            )
    return 0


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
