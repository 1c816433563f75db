"""The job a start submits, built without a shell: options, their slurmrestd form, the script, the comment."""

from __future__ import annotations

import pytest

from outpost.backends.slurm import script
from outpost.backends.slurm.jobs import Comment, Job, parse_comment, port_mac, proven_port
from outpost.errors import ConfigurationError, InvalidBody
from outpost.models import ServiceId


def test_later_sources_win_and_the_outposts_own_options_last() -> None:
    options = script.job_options(
        {"partition": "admin", "account": "proj", "qos": ""},
        {"partition": "misc"},
        {"partition": "flavor", "cpus_per_task": 4, "mem": "8G", "unknown": "x"},
        {"job-name": "outpost-1"},
    )
    assert options == {
        "partition": "flavor",
        "account": "proj",
        "cpus-per-task": "4",
        "mem": "8G",
        "job-name": "outpost-1",
    }
    assert script.sbatch_arguments(options)[0] == "--partition=flavor"


@pytest.mark.parametrize("value", ["debug\n#SBATCH --uid=0", "a\rb", "x\x00"])
def test_an_option_is_one_line(value: str) -> None:
    with pytest.raises(InvalidBody, match="partition"):
        script.job_options({"partition": value}, {}, {}, {})


@pytest.mark.parametrize(
    "value, minutes", [("90", 90), ("1:30", 2), ("01:00:00", 60), ("1-00", 1440), ("2-01:30:00", 2970)]
)
def test_slurm_times_in_minutes(value: str, minutes: int) -> None:
    assert script.slurm_minutes(value) == minutes


def test_rest_properties_follow_slurmrestds_names_and_types() -> None:
    options = {"time": "01:00:00", "mem": "2G", "nodes": "1", "cpus-per-task": "2", "job-name": "n", "output": "/o"}
    assert script.rest_properties(options) == {
        "time_limit": 60, "memory_per_node": 2048, "nodes": [1], "cpus_per_task": 2, "name": "n",
        "standard_output": "/o",
    }  # fmt: skip
    with pytest.raises(ConfigurationError, match="begin"):
        script.rest_properties({"begin": "now+1hour"})
    with pytest.raises(InvalidBody, match="mem"):
        script.rest_properties({"mem": "lots"})


def test_the_script_is_the_prologue_then_the_wrapper_from_a_quoted_here_document() -> None:
    text = script.batch_script("/opt/python 3/bin/python3", "module load jupyter")
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash" and "module load jupyter" in lines
    assert "exec '/opt/python 3/bin/python3' - <<'OUTPOST_JOB_WRAPPER'" in lines
    assert lines[-1] == "OUTPOST_JOB_WRAPPER"


def test_the_comment_carries_the_service_and_the_proven_port() -> None:
    sid = ServiceId("hub;A", "name=x", "1")
    text = Comment(sid).text()
    assert parse_comment(text) == Comment(sid)
    job = Job(7, "outpost-x", "RUNNING", "None", "node1", 0, 0, f"{text};port=8888;mac={port_mac('s', 7, 8888)}", "u")
    assert proven_port(job, "s") == 8888
    assert proven_port(job, "another secret") is None
    moved = Job(8, "outpost-x", "RUNNING", "None", "node1", 0, 0, job.comment, "u")  # a copy on another job
    assert proven_port(moved, "s") is None
    assert parse_comment("someone else's comment") is None


@pytest.mark.parametrize("status, code", [(0, 0), (3 << 8, 3), (15, 143), (9, 137)])
def test_exit_codes_as_a_shell_shows_them(status: int, code: int) -> None:
    assert Job(1, "", "FAILED", "", "", 0, status, "", "").exit_code == code
