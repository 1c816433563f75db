"""The job a start submits: its batch script and its options, built without any hub-chosen string reaching a
shell. The script is the administrator's prologue and this package's job wrapper; the hub's values travel in
the job's environment (given to sbatch or slurmrestd as data) and in options checked to be one line.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from outpost.errors import ConfigurationError, InvalidBody, shown

WRAPPER = Path(__file__).with_name("job_wrapper.py")
# Where a flavor's resources go: flavor key -> sbatch long option.
RESOURCE_OPTIONS = {
    "time": "time",
    "cpus_per_task": "cpus-per-task",
    "mem": "mem",
    "gres": "gres",
    "partition": "partition",
    "nodes": "nodes",
}
# A value that would end the option (a new line is a new script line with --wrap, a new directive elsewhere).
_ONE_LINE = re.compile(r"[^\x00-\x1f\x7f]{1,4096}")
_OPTION_NAME = re.compile(r"[a-z][a-z0-9-]{0,39}")


def batch_script(python: str, prologue: str) -> str:
    """The job: the administrator's prologue, then the wrapper, which reports the port and becomes the server.
    The wrapper is read from standard input (a here-document), so nothing needs to exist on the node."""
    wrapper = WRAPPER.read_text()
    return (
        "#!/bin/bash\n"
        "# Submitted by Outpost Functions: the administrator's prologue, then the port report and the server.\n"
        f"{prologue.rstrip()}\n"
        f"exec {shlex.quote(python)} - <<'OUTPOST_JOB_WRAPPER'\n{wrapper}OUTPOST_JOB_WRAPPER\n"
    )


def minutes(value: Any) -> int:
    """A runtime in minutes from seconds (a flavor's runtime limit), rounded up: Slurm's --time unit."""
    return max(1, -(-int(value) // 60))


def job_options(
    defaults: Mapping[str, str], overrides: Mapping[str, Any], resources: Mapping[str, Any], fixed: Mapping[str, str]
) -> dict[str, str]:
    """sbatch's long options, later ones winning: the administrator's, then what `misc` may set, then the
    flavor's resources, then what the outpost itself needs (name, comment, output, directory)."""
    options: dict[str, str] = {}
    for source in (
        defaults,
        overrides,
        {RESOURCE_OPTIONS[k]: v for k, v in resources.items() if k in RESOURCE_OPTIONS},
    ):
        for name, value in source.items():
            if value in ("", None):
                continue
            options[name] = str(value)
    options.update(fixed)
    bad = [
        name for name, value in options.items() if not _OPTION_NAME.fullmatch(name) or not _ONE_LINE.fullmatch(value)
    ]
    if bad:
        raise InvalidBody(f"invalid Slurm job options: {shown(bad)}")
    return options


def sbatch_arguments(options: Mapping[str, str]) -> list[str]:
    """The command line: each option one argument (`--name=value`), never through a shell."""
    return [f"--{name}={value}" for name, value in options.items()]


# sbatch long option -> (slurmrestd's job property, how its value is written).
_REST_NAMES = {"job-name": "name", "output": "standard_output", "error": "standard_error",
               "chdir": "current_working_directory", "constraint": "constraints", "mem": "memory_per_node",
               "time": "time_limit"}  # fmt: skip
_REST_INTEGERS = frozenset({"cpus_per_task", "tasks", "nice", "priority", "tasks_per_node", "threads_per_core"})
_REST_STRINGS = frozenset(
    {"account", "comment", "constraints", "gres", "partition", "qos", "reservation", "licenses", "wckey",
     "mail_type", "mail_user", "gpus", "gpus_per_node", "gpus_per_task", "cpus_per_gpu", "name",
     "standard_output", "standard_error", "current_working_directory", "exclusive", "dependency"}
)  # fmt: skip
_MEMORY_UNITS = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}


def slurm_minutes(value: str) -> int:
    """sbatch's --time forms (minutes, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]) in minutes, rounded up."""
    days, _, clock = value.partition("-") if "-" in value else ("0", "", value)
    parts = [int(p) for p in clock.split(":")]
    if "-" in value:
        hours, mins, secs = (parts + [0, 0])[:3]
    elif len(parts) == 3:
        hours, mins, secs = parts
    else:
        hours, mins, secs = 0, parts[0], (parts[1:] or [0])[0]
    total = int(days) * 86400 + hours * 3600 + mins * 60 + secs
    return max(1, -(-total // 60))


def megabytes(value: str) -> int:
    """sbatch's --mem (a number of MB, or with a K/M/G/T suffix) in MB."""
    match = re.fullmatch(r"(\d+)([KMGT]?)B?", value.upper())
    if not match:
        raise ValueError(value)
    return max(1, int(int(match[1]) * _MEMORY_UNITS[match[2] or "M"]))


def rest_properties(options: Mapping[str, str]) -> dict[str, Any]:
    """The same options as slurmrestd's job properties (it reads no #SBATCH line). An option it has no property
    for is the administrator's to change: ConfigurationError names it."""
    properties: dict[str, Any] = {}
    unknown = []
    for option, value in options.items():
        name = _REST_NAMES.get(option, option.replace("-", "_"))
        try:
            if option == "time":
                properties[name] = slurm_minutes(value)
            elif option == "mem":
                properties[name] = megabytes(value)
            elif option == "nodes":
                properties[name] = [int(n) for n in value.split("-", 1)]
            elif name in _REST_INTEGERS:
                properties[name] = int(value)
            elif name in _REST_STRINGS:
                properties[name] = value
            else:
                unknown.append(option)
        except (ValueError, KeyError):
            raise InvalidBody(f"invalid value for the Slurm option {option!r}") from None
    if unknown:
        raise ConfigurationError(f"slurmrestd takes no option {shown(unknown)}: use the Slurm commands or drop it")
    return properties
