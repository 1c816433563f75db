"""Part 2: cold start, from process spawn to the first successful answer, against the empty function.

Each repetition spawns a fresh `functions-framework` process per function (in an alternating
order) and retries one request until it succeeds, so the figure contains the interpreter, imports,
gunicorn's worker fork and everything the first request builds (settings, Redis connection, backend
configuration). The requests, chosen so that no backend work is in the figure:

  empty      GET /                               200
  libraries  GET /                               200  the empty function importing the libraries
                                                      the functions need: their floor
  poll       GET /services/<name>/<start_id>     200  a running service (tiny server)
  start      POST /services, execution-type: async
                                                 202  the event goes to OUTPOST_EVENTS_SINK (a
                                                      stand-in broker: the empty function)
  stop       DELETE /services/<name>/<start_id>  200  a stored record without backend state
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.stack import FunctionProcess, basic_auth, say, start_body, wait_answer

Request = tuple[str, str, dict[str, str], bytes | None]


def run(
    env: dict[str, str],
    log_dir: Path,
    poll_path: str,
    make_stop_path: Callable[[int], str],
    *,
    repetitions: int = 5,
) -> dict[str, Any]:
    auth = {"Authorization": basic_auth("hub0")}

    def request_for(name: str, rep: int) -> Request:
        if name == "poll":
            return "GET", poll_path, auth, None
        if name == "start":
            body = json.dumps(start_body(f"cold{rep}", start_id=str(rep))).encode()
            headers = {**auth, "Content-Type": "application/json", "execution-type": "async"}
            return "POST", "/services", headers, body
        if name == "stop":
            return "DELETE", make_stop_path(rep), auth, None
        return "GET", "/", {}, None

    names = ["empty", "libraries", "poll", "start", "stop"]
    samples: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(repetitions):
        order = names if rep % 2 == 0 else names[::-1]
        for name in order:
            method, path, headers, body = request_for(name, rep)
            fn = FunctionProcess(name, env, log_dir).spawn()
            try:
                samples[name].append(wait_answer(fn, method, path, headers, body, timeout=60))
            finally:
                fn.kill()
        say(
            "cold start: rep {}/{}: {}".format(
                rep + 1, repetitions, "  ".join(f"{n} {samples[n][-1] * 1000:.0f} ms" for n in names)
            )
        )
    empty = statistics.median(samples["empty"])
    libraries = statistics.median(samples["libraries"])
    result: dict[str, Any] = {"repetitions": repetitions, "functions": {}}
    for name in names:
        median = statistics.median(samples[name])
        result["functions"][name] = {
            "median_ms": round(median * 1000, 1),
            "min_ms": round(min(samples[name]) * 1000, 1),
            "max_ms": round(max(samples[name]) * 1000, 1),
            "ratio": round(median / empty, 3),
            "ratio_to_libraries": round(median / libraries, 3),
            "samples_ms": [round(s * 1000, 1) for s in samples[name]],
        }
    return result
