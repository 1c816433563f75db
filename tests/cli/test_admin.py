"""The administrator's tools: service listing/stop and `outpost check` (key rotation: test_rotation.py)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

from outpost.cli import admin
from outpost.models import ServiceId
from outpost.runtime import get_runtime
from outpost.settings import Settings
from tests.conftest import HUBS, basic, settings_env, start_body

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_list_show_stop_never_print_secrets(api: httpx.AsyncClient, settings: Settings) -> None:
    assert (await api.post("/services", json=start_body(), headers=basic("hubA"))).status_code == 200
    runtime = await get_runtime()
    listing = await admin.list_services(runtime, "hubA")
    assert "srv" in listing and "running" in listing and "secret-api-token" not in listing
    assert await admin.list_services(runtime, "hubB") == "  ".join(admin.COLUMNS)
    shown = await admin.show_service(runtime, ServiceId("hubA", "srv", "1"))
    assert "alice" in shown and "secret-api-token" not in shown
    assert await admin.stop_service(runtime, ServiceId("hubA", "srv", "1")) == "stopped hubA/srv/1"
    assert (await api.get("/services/srv/1", headers=basic("hubA"))).status_code == 404


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "outpost.cli", *args], env={**os.environ, **env}, capture_output=True, text=True
    )


async def test_the_commands_log_in_the_text_form_of_the_one_format(api: httpx.AsyncClient, settings: Settings) -> None:
    """docs/administration.md#logs: `time LEVEL logger [request_id] message`, as every process's text form."""
    assert (await api.post("/services", json=start_body(), headers=basic("hubA"))).status_code == 200
    stopped = await asyncio.to_thread(run_cli, "services", "stop", "hubA", "srv", "1", env=settings_env(settings))
    assert stopped.returncode == 0 and stopped.stdout == "stopped hubA/srv/1\n", stopped.stderr
    logged = stopped.stderr.splitlines()
    assert logged and re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO outpost\.lifecycle\.stop \[-\] stopped hubA/srv/1", logged[-1]
    )


async def test_check_reports_each_problem(redis_url: str, tmp_path: Path) -> None:
    good = {
        "OUTPOST_CRYPT_KEY": Fernet.generate_key().decode(),
        "OUTPOST_HUB_USERNAMES": ";".join(HUBS),
        "OUTPOST_HUB_PASSWORDS": ";".join(HUBS.values()),
        "OUTPOST_REDIS_URL": redis_url,
        "OUTPOST_DATA_DIR": str(tmp_path),
    }
    ok = await asyncio.to_thread(run_cli, "check", env=good)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok   Redis reachable" in ok.stdout
    bad_config = tmp_path / "config.yaml"
    bad_config.write_text("flavors:\n  gpu:\n    max: lots\n")
    cases = [
        ({**good, "OUTPOST_REDIS_URL": f"unix://{tmp_path}/none.sock"}, [], "FAIL Redis"),
        ({**good, "OUTPOST_CRYPT_KEY": "not-a-key"}, [], "Fernet keys"),
        ({**good, "OUTPOST_HUB_USERNAMES": ""}, [], "FAIL hub credentials"),
        (good, ["--config", str(bad_config)], "flavors.gpu.max"),
    ]
    for env, extra, words in cases:
        result = await asyncio.to_thread(run_cli, "check", *extra, env=env)
        assert result.returncode == 1 and words in result.stdout, result.stdout
        assert "not-a-key" not in result.stdout and HUBS["hubA"] not in result.stdout


async def test_check_warns_about_hub_options_that_run_code() -> None:
    settings = Settings(
        crypt_key=Fernet.generate_key().decode(),
        hub_options={
            "trusted": {"allowedOverrides": "all"},
            "listed": {"allowedOverrides": ["port", "cmd", "env"], "allowedEnv": ["PYTHON*", "TEAM_*"]},
            "careful": {"allowedOverrides": ["port", "ip"], "allowedEnv": ["TEAM_*", "JUPYTER_CONFIG_PATH"]},
            "default": {},
        },
    )
    assert admin.policy_warnings(settings) == [
        "hub listed: allowedOverrides includes cmd, env: it may run any command as the servers' user",
        "hub listed: allowedEnv lets it set PYTHONPATH, PYTHONSTARTUP, PYTHONWARNINGS, PYTHONHOME, which run code "
        "it chooses",
        "hub trusted: allowedOverrides is 'all': it may set cmd, env and every other backend option, i.e. run any "
        "command as the servers' user; list what it may override instead",
    ]


async def test_check_says_per_hub_whether_callback_urls_limit_the_calls(redis_url: str, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("hubOptions:\n  hubA:\n    callbackUrls: ['https://hub-a.example.org/hub/api/']\n")
    env = {
        "OUTPOST_CRYPT_KEY": Fernet.generate_key().decode(),
        "OUTPOST_HUB_USERNAMES": ";".join(HUBS),
        "OUTPOST_HUB_PASSWORDS": ";".join(HUBS.values()),
        "OUTPOST_REDIS_URL": redis_url,
    }
    result = await asyncio.to_thread(run_cli, "check", "--config", str(config), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "ok   hub hubA: callbackUrls set, the outpost calls back only https://hub-a.example.org/hub/api/" in lines
    assert any(
        line.startswith("WARN hub hubB: no callbackUrls") and "hubOptions.hubB.callbackUrls" in line for line in lines
    )
    config.write_text("hubOptions:\n  hubA:\n    callbackUrls: ['https://hub-a.example.org.evil.com?x']\n")
    refused = await asyncio.to_thread(run_cli, "check", "--config", str(config), env=env)
    assert refused.returncode == 1 and "FAIL settings" in refused.stdout and "callbackUrls" in refused.stdout


async def test_check_reports_each_rule_it_loaded(redis_url: str, tmp_path: Path) -> None:
    """One line per flavor, user rule and hub rule: a rule the file lost shows by its absence."""
    config = tmp_path / "config.yaml"
    config.write_text(
        "flavors:\n  small: {max: 2, maxPerUser: 1, runtime: {hours: 1}}\n  big: {}\n"
        "users:\n  alice: {authentication: {name: alice}, flavors: [small]}\n"
        "  guests: {authentication: {name: 'guest.*'}, forbidden: true}\n"
        "hubs:\n  main: {jupyterhub_name: [hubA, hubB], flavors: [big]}\n"
    )
    env = {"OUTPOST_CRYPT_KEY": Fernet.generate_key().decode(), "OUTPOST_HUB_USERNAMES": "hubA",
           "OUTPOST_HUB_PASSWORDS": "pw", "OUTPOST_REDIS_URL": redis_url}  # fmt: skip
    result = await asyncio.to_thread(run_cli, "check", "--config", str(config), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [
        line
        for line in result.stdout.splitlines()
        if line.startswith(("ok   flavor ", "ok   user rule", "ok   hub rule"))
    ]
    assert lines == [
        "ok   flavor small: max 2, per user 1, runtime 60 min, weight 0",
        "ok   flavor big: max unlimited, per user unlimited, runtime unlimited, weight 0",
        "ok   user rule alice: matching name: flavors small, weight 0",
        "ok   user rule guests: matching name: forbidden",
        "ok   hub rule main: hubs hubA, hubB: flavors big, weight 0",
    ]
