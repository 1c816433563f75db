"""The targets of issue 7, judged on one run's ratios, and the printed table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Verdict:
    target: str
    value: str
    passed: bool | None  # None: not measured in this run


def _get(results: dict[str, Any], *path: str | int) -> Any:
    node: Any = results
    for part in path:
        if node is None:
            return None
        node = node[part] if isinstance(part, int) else node.get(part)
    return node


def _check(label: str, value: float | None, ok: Callable[[float], bool], fmt: str) -> Verdict:
    if value is None:
        return Verdict(label, "not measured", None)
    return Verdict(label, fmt.format(value), ok(value))


def targets(results: dict[str, Any]) -> list[Verdict]:
    verdicts: list[Verdict] = []
    table = _get(results, "throughput", "table") or []
    at64 = next((row for row in table if row["connections"] == 64), None)
    verdicts.append(
        _check("poll req/s at 64 conns >= 0.5x empty", at64 and at64["ratio"]["rps"], lambda v: v >= 0.5, "{:.2f}x")
    )
    verdicts.append(
        _check("poll p99 at 64 conns <= 2x empty", at64 and at64["ratio"]["p99"], lambda v: v <= 2.0, "{:.2f}x")
    )
    if at64 and "ratio_dev" in at64:
        verdicts.append(
            _check("outpost dev poll req/s at 64 conns >= 0.5x empty", at64["ratio_dev"]["rps"], lambda v: v >= 0.5,
                   "{:.2f}x")
        )  # fmt: skip
    at1 = next((row for row in table if row["connections"] == 1), None)
    for key, label in (("ratio", "poll"), ("ratio_dev", "outpost dev poll")):
        # A lost TCP_NODELAY: 40 ms per kept-alive request, over 40x the empty function's p50 (1 ms).
        value = at1[key]["p50"] if at1 and key in at1 else None
        verdicts.append(_check(f"{label} p50 at 1 kept-alive conn <= 10x empty", value, lambda v: v <= 10.0, "{:.2f}x"))
    verdicts.append(
        _check("start seen within 5 ms of the server listening, p50 (backend alone)",
               _get(results, "readiness", "backend", "p50_ms"), lambda v: v <= 5.0, "{:.1f} ms")
    )  # fmt: skip
    for name in ("start", "poll", "stop"):
        ratio = _get(results, "coldstart", "functions", name, "ratio")
        verdicts.append(_check(f"{name} cold start <= 1.5x empty", ratio, lambda v: v <= 1.5, "{:.2f}x"))
    for key, label in (("lifecycle", "tiny server"), ("lifecycle_instant", "instant command")):
        for level in _get(results, key, "levels") or []:
            for op in ("start", "stop"):
                verdicts.append(
                    _check(
                        f"{op} overhead p50 < 20 ms at c={level['concurrency']} ({label})",
                        level[f"{op}_overhead_p50_ms"],
                        lambda v: v < 20.0,
                        "{:.1f} ms",
                    )
                )
    for what in ("list", "poll"):
        entry = _get(results, "scale", what)
        value = max(entry["ratio_p50"], entry["ratio_rps"]) if entry else None
        verdicts.append(_check(f"{what} 100 -> 10,000 services within 1.2x", value, lambda v: v <= 1.2, "{:.2f}x"))
    storm = results.get("storm")
    if storm:
        for name, check in storm["checks"].items():
            verdicts.append(Verdict(f"storm: {name}", check["detail"], check["ok"]))
    return verdicts


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [_row(header, widths), _row(["-" * w for w in widths], widths)] + [_row(r, widths) for r in rows]


def render(results: dict[str, Any], verdicts: list[Verdict]) -> str:
    meta = results["meta"]
    out = [
        f"Outpost Functions benchmark  {meta['when']}  ({meta['cpus']} CPUs, load avg at start "
        f"{meta['loadavg_start']}, at end {meta.get('loadavg_end', '?')}; python {meta['python']}; "
        f"functions-framework {meta['functions_framework']}; {meta['server']})",
        f"command: {meta['command']}",
    ]
    tp = results.get("throughput")
    if tp:
        out += [
            "",
            f"1. Poll: GET /services/<name>/<start_id> (Basic auth, running tiny server), by the poll function and "
            f"through outpost dev's API, and the floor (the empty function reading one Redis key), vs the empty "
            f"function; kept-alive connections; "
            f"{tp['body_bytes']}-byte body; {tp['tool']}, {tp['rounds']} x {tp['duration_s']:g} s, medians",
        ]
        rows = []
        vias = (("poll", "ratio", "functions"), ("dev", "ratio_dev", "outpost dev"), ("floor", "ratio_floor", "floor"))
        for row, name, ratio, via in [(r, n, k, v) for n, k, v in vias for r in tp["table"]]:
            if name not in row:
                continue
            e, p, r = row["empty"], row[name], row[ratio]
            rows.append(
                [
                    via,
                    str(row["connections"]),
                    f"{e['rps']:.0f}",
                    f"{p['rps']:.0f}",
                    f"{r['rps']:.2f}x",
                    f"{e['p50_ms']:.2f}",
                    f"{p['p50_ms']:.2f}",
                    f"{r['p50']:.2f}x",
                    f"{e['p99_ms']:.2f}",
                    f"{p['p99_ms']:.2f}",
                    f"{r['p99']:.2f}x",
                    f"{e['worker_cpu_us_per_request']:.0f}",
                    f"{p['worker_cpu_us_per_request']:.0f}",
                    f"{p.get('redis_cpu_us_per_request', 0):.0f}" if name == "poll" else "",
                ]
            )
        out += _table(
            [
                "poll via",
                "conns",
                "empty req/s",
                "poll req/s",
                "ratio",
                "empty p50 ms",
                "poll p50 ms",
                "ratio",
                "empty p99 ms",
                "poll p99 ms",
                "ratio",
                "empty cpu µs/req",
                "poll cpu µs/req",
                "poll redis cpu µs/req",
            ],
            rows,
        )
    rd = results.get("readiness")
    if rd:
        out += [
            "",
            f"2b. Start after listen: answer time - the server's listen() time, {rd['starts']} starts each, one at "
            f"a time (server listens after {', '.join(f'{d * 1000:g}' for d in rd['delays_s'])} ms)",
        ]
        rows = [
            [label, f"{rd[key]['p50_ms']:.1f}", f"{rd[key]['p99_ms']:.1f}", f"{rd[key]['max_ms']:.1f}"]
            for key, label in (("backend", "LocalBackend.start alone"), ("outpost", "POST /services (start function)"))
        ]
        out += _table(["", "p50 ms", "p99 ms", "max ms"], rows)
    cs = results.get("coldstart")
    if cs:
        out += ["", f"2. Cold start: spawn -> first successful answer, median of {cs['repetitions']}"]
        rows = [
            [
                name,
                f"{f['median_ms']:.0f}",
                f"{f['min_ms']:.0f}-{f['max_ms']:.0f}",
                f"{f['ratio']:.2f}x",
                f"{f['ratio_to_libraries']:.2f}x",
            ]
            for name, f in cs["functions"].items()
        ]
        out += _table(["function", "median ms", "min-max ms", "x empty", "x libraries"], rows)
    if results.get("lifecycle") or results.get("lifecycle_instant"):
        out += [
            "",
            "3. Start/stop: outpost (HTTP, sync) vs the backend alone (LocalBackend, same command), "
            "p50 ms; overhead = difference of p50s (and of means)",
        ]
        rows = []
        for key in ("lifecycle", "lifecycle_instant"):
            part = results.get(key) or {}
            command = str(part.get("command", "")).split(",")[0].rsplit("/", 1)[-1]
            for level in part.get("levels", []):
                rows.append(
                    [
                        command,
                        str(level["concurrency"]),
                        str(level["outpost_start"]["n"]),
                        f"{level['outpost_start']['p50_ms']:.1f}",
                        f"{level['backend_start']['p50_ms']:.1f}",
                        f"{level['start_overhead_p50_ms']:.1f}",
                        f"{level['start_overhead_mean_ms']:.1f}",
                        f"{level['outpost_stop']['p50_ms']:.1f}",
                        f"{level['backend_stop']['p50_ms']:.1f}",
                        f"{level['stop_overhead_p50_ms']:.1f}",
                        f"{level['stop_overhead_mean_ms']:.1f}",
                        f"{level['empty_http']['p50_ms']:.1f}",
                    ]
                )
        out += _table(
            [
                "command",
                "concurrency",
                "n",
                "start",
                "backend start",
                "overhead",
                "of means",
                "stop",
                "backend stop",
                "overhead",
                "of means",
                "empty POST",
            ],
            rows,
        )
    sc = results.get("scale")
    if sc:
        out += [
            "",
            f"4. Scale: hub0 with {sc['hub_services']} services; {sc['totals']['small']} vs "
            f"{sc['totals']['large']} stored across 10 hubs; c=16, medians",
        ]
        rows = []
        for what, label in (("list", "GET /services (hub0)"), ("poll", "GET /services/svc0/1")):
            e = sc[what]
            rows.append(
                [
                    label,
                    f"{e['small']['rps']:.0f}",
                    f"{e['large']['rps']:.0f}",
                    f"{e['small']['p50_ms']:.2f}",
                    f"{e['large']['p50_ms']:.2f}",
                    f"{e['ratio_p50']:.2f}x",
                    f"{e['ratio_cpu']:.2f}x",
                ]
            )
        out += _table(
            ["request", "req/s small", "req/s large", "p50 small", "p50 large", "p50 ratio", "cpu ratio"], rows
        )
        m = sc["memory"]
        out.append(
            f"   Redis memory per service: {m['used_memory_delta_per_record']:.0f} bytes (INFO used_memory "
            f"delta over {m['records_written']} records, incl. index and per-user slot counters); record "
            f"hash alone {m['record_hash_bytes_median']} bytes (MEMORY USAGE, {m['record_fields']} fields, "
            f"{m['record_value_bytes']} bytes of values); written at {m['writes_per_second']:.0f} "
            f"Store.create/s"
        )
    if results.get("storm"):
        out += ["", "6. Start storm (bench/storm.py)", *storm_lines(results["storm"])]
    extras = (("tunnel", "5. Tunnel (bench/tunnel.py)"), ("slurm", "7. Slurm backend (bench/slurm.py)"),
              ("poll_status_cache", "Poll status cache"))  # fmt: skip
    for key, title in extras:
        extra = results.get(key)
        if extra is None:
            continue
        out += ["", title]
        if extra.get("error"):
            out.append(f"   not measured: {extra['error']}")
        else:
            out += ["   " + line for line in extra.get("report", "").splitlines()]
    out += ["", "Targets"]
    for v in verdicts:
        mark = {True: "PASS", False: "FAIL", None: "----"}[v.passed]
        out.append(f"  [{mark}] {v.target}: {v.value}")
    return "\n".join(out)


def as_json(verdicts: list[Verdict]) -> list[dict[str, Any]]:
    return [asdict(v) for v in verdicts]


def storm_lines(storm: dict[str, Any]) -> list[str]:
    """The storm's answers, its latency next to the backend alone's, and its checks."""
    hook = f"; mid-storm action {storm['mid_storm']}" if storm["mid_storm"] else ""
    lines = [
        f"   {storm['count']} starts from {storm['hubs']} hubs at once through outpost dev, then as many stops"
        f"{hook}; flavors {storm['flavors']}",
        f"   start answers {storm['start_answers']}; stop answers {storm['stop_answers']}"
        + (f" ({storm['stops_retried']} retried)" if storm["stops_retried"] else ""),
        f"   wall time: starts {storm['wall_s']['starts']:.1f} s, stops {storm['wall_s']['stops']:.1f} s; "
        f"backend alone: {storm['backend_concurrency']} starts at once, then as many stops"
        + (f"; its failed starts: {storm['backend_errors']}" if storm["backend_errors"] else ""),
        f"   machine: {storm['loadavg_1min']['cpus']} CPUs, load average {storm['loadavg_1min']['start']:.1f} "
        f"before, {storm['loadavg_1min']['end']:.1f} after",
    ]
    rows = []
    for op in ("start", "stop"):
        outpost, backend = storm[f"outpost_{op}"], storm[f"backend_{op}"]
        rows.append(
            [
                op,
                str(outpost["n"]),
                f"{outpost['p50_ms']:.0f}",
                f"{backend['p50_ms']:.0f}",
                f"{storm['ratio'][f'{op}_p50']:.2f}x",
                f"{outpost['p99_ms']:.0f}",
                f"{backend['p99_ms']:.0f}",
                f"{storm['ratio'][f'{op}_p99']:.2f}x",
            ]
        )
    header = ["", "n", "outpost p50 ms", "backend p50 ms", "ratio", "outpost p99 ms", "backend p99 ms", "ratio"]
    lines += ["   " + line for line in _table(header, rows)]
    for name, check in storm["checks"].items():
        lines.append(f"   [{'PASS' if check['ok'] else 'FAIL'}] {name}: {check['detail']}")
    return lines
