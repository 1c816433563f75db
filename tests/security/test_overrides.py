"""`misc`: with the default policy a hub may override only what the OutpostSpawner sends by default, and
whatever it sends is data: a template with more than plain `{field}` placeholders is refused."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from tests.conftest import TINY_SERVER
from tests.e2e.processes import VENV_BIN
from tests.security.stack import Evidence, Stack, decoded, server_python, start_body

# hubA: the administrator's explicit "all"; hubB: the default policy.
HUB_OPTIONS = {"hubA": {"allowedOverrides": "all"}}


@pytest.fixture(scope="module")
def stack_values() -> dict[str, Any]:
    return {"hubOptions": HUB_OPTIONS}


def hub_command(proof: Evidence) -> list[str]:
    """A hub's own command: leaves evidence, then serves (so a start that runs it succeeds)."""
    return ["/bin/sh", "-c", f'id > "{proof.path}"; exec "$0" "$1"', server_python(), str(TINY_SERVER)]


def local_misc(**overrides: Any) -> dict[str, Any]:
    """The OutpostSpawner's default misc, on a free loopback port (several servers run at once)."""
    body = start_body()
    return {**body["misc"], "port": 0, "ip": "127.0.0.1", **overrides}


def test_the_outpostspawners_default_misc_passes_the_default_policy(clean: Stack) -> None:
    response = clean.start("hubB", start_body(name="defaults", misc=local_misc()))
    assert response.status_code == 200, response.text
    assert httpx.get(decoded(response)["service"], timeout=5).json()["user"] == "alice"


@pytest.mark.parametrize(
    "misc",
    [
        {"cmd": "command"},
        {"args": ["-c", "import os; os.system('id')"]},
        {"env": {"PYTHONWARNINGS": "ignore::antigravity.x::0"}},
        {"notebook_dir": "/"},
    ],
    ids=["cmd", "args", "env", "notebook_dir"],
)
def test_the_default_policy_refuses_what_runs_code(clean: Stack, proof: Evidence, misc: dict[str, Any]) -> None:
    key = next(iter(misc))
    value = hub_command(proof) if misc[key] == "command" else misc[key]
    response = clean.start("hubB", start_body(name="override", misc=local_misc(**{key: value})))
    assert response.status_code == 419, response.text
    assert decoded(response)["class"] == "OverrideNotAllowed"
    assert decoded(response)["args"] == [f"This outpost does not allow overriding: {key}."]
    assert clean.nothing_created()
    assert not proof.exists()


def test_a_hub_the_administrator_trusts_with_all_runs_its_command(clean: Stack, proof: Evidence) -> None:
    response = clean.start("hubA", start_body(name="trusted", misc=local_misc(cmd=hub_command(proof))))
    assert response.status_code == 200, response.text
    assert proof.exists()  # what "all" means: the hub ran its own command on the outpost
    assert httpx.get(decoded(response)["service"], timeout=5).status_code == 200


def test_outpost_check_warns_about_a_hub_with_all(stack: Stack) -> None:
    env = {
        **os.environ,
        "OUTPOST_CRYPT_KEY": Fernet.generate_key().decode(),
        "OUTPOST_HUB_USERNAMES": "hubA;hubB",
        "OUTPOST_HUB_PASSWORDS": "a;b",
        "OUTPOST_REDIS_URL": f"unix://{stack.data_dir / 'redis' / 'redis.sock'}",
    }
    config = stack.tmp / "values.yaml"
    result = subprocess.run(
        [str(VENV_BIN / "outpost"), "check", "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    warnings = [line for line in result.stdout.splitlines() if line.startswith("WARN") and "allowedOverrides" in line]
    assert warnings == [
        "WARN hub hubA: allowedOverrides is 'all': it may set cmd, env and every other backend option, i.e. run any "
        "command as the servers' user; list what it may override instead"
    ], result.stdout + result.stderr


TEMPLATE_ATTACKS = [
    {"pod_name_template": "{username.__class__.__init__.__globals__}"},
    {"pod_name_template": "{username:>999999999}"},  # a gigabyte, wherever a backend fills it in
    {"dns_name_template": "{name!r}.{namespace}"},
    {"dns_name_template": "{name[0]}"},
    {"extra_labels": {"team": "{username:{servername}}"}},  # KubeSpawner fills in label values
    {"pod_name_template": "{username}" * 17},
]


@pytest.mark.parametrize("misc", TEMPLATE_ATTACKS, ids=lambda misc: next(iter(misc)))
@pytest.mark.parametrize("hub", ["hubA", "hubB"])
def test_templates_are_data_not_code(clean: Stack, hub: str, misc: dict[str, Any]) -> None:
    response = clean.start(hub, start_body(name="template", misc=local_misc(**misc)))
    assert response.status_code == 419, response.text
    assert decoded(response)["class"] == "TemplateNotAllowed"
    assert decoded(response)["args"][0].endswith(f"(or too many): {next(iter(misc))}.")
    assert clean.nothing_created()
