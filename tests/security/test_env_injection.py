"""A hub's `env` cannot make the server's interpreter, loader or shell run a command of the hub's choosing.

The issue's attack: with `cmd` refused by the override policy, `PYTHONWARNINGS=ignore::antigravity.x::0`
makes Python import `antigravity` at start-up, which opens a web browser: `BROWSER` names the command.
The tiny server is Python, so before the allow-list that command ran as the servers' user.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.security.stack import RECOMMENDED_OVERRIDES, Evidence, Stack, decoded, start_body

# hubA: the README's recommended override list (no cmd); hubB: the default policy plus a few allowed names.
HUB_OPTIONS = {
    "hubA": {"allowedOverrides": RECOMMENDED_OVERRIDES},
    "hubB": {"allowedEnv": ["TEAM_*", "JUPYTER_CONFIG_DIR"]},
}


@pytest.fixture(scope="module")
def stack_values() -> dict[str, Any]:
    return {"hubOptions": HUB_OPTIONS}


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_the_issues_attack_is_refused_and_runs_nothing(clean: Stack, proof: Evidence, mode: str) -> None:
    body = start_body(name="attack", callbacks=clean.recorder.url)
    body["env"]["PYTHONWARNINGS"] = "ignore::antigravity.x::0"
    body["env"]["BROWSER"] = f'/bin/sh -c "id > {proof.path}" #%s'
    response = clean.start("hubA", body, **({"execution-type": "async"} if mode == "async" else {}))

    assert response.status_code == 419, response.text
    error = decoded(response)
    assert error["class"] == "EnvNotAllowed"
    assert "environment variables to servers: BROWSER, PYTHONWARNINGS." in error["args"][0]
    assert "antigravity" not in response.text and "/bin/sh" not in response.text  # names, never values
    assert clean.nothing_created()
    assert clean.recorder.calls == []  # not even a progress event: refused before anything began
    assert not proof.exists()
    assert "antigravity" not in clean.log() and "/bin/sh" not in clean.log()


LOADERS = [
    ("LD_PRELOAD", "/tmp/evil.so"),
    ("PYTHONPATH", "/tmp/evil"),
    ("PYTHONSTARTUP", "/tmp/evil.py"),
    ("BASH_ENV", "/tmp/evil.sh"),
    ("PATH", "/tmp/evil:/usr/bin:/bin"),
    ("JUPYTER_CONFIG_DIR", "/home/bob/.jupyter"),  # a path a server loads code from
    ("JUPYTERHUB_SINGLEUSER_APP", "evil.module.App"),  # what code runs
]


@pytest.mark.parametrize(
    ("hub", "name", "value"),
    # hubB's administrator allows JUPYTER_CONFIG_DIR (the next test).
    [
        (hub, *loader)
        for hub in ("hubA", "hubB")
        for loader in LOADERS
        if (hub, loader[0]) != ("hubB", "JUPYTER_CONFIG_DIR")
    ],
)
def test_interpreter_and_loader_variables_are_refused(clean: Stack, hub: str, name: str, value: str) -> None:
    body = start_body(name="loader", misc={})
    body["env"][name] = value
    response = clean.start(hub, body)
    assert response.status_code == 419, response.text
    assert decoded(response)["class"] == "EnvNotAllowed"
    assert f"to servers: {name}." in decoded(response)["args"][0] and value not in response.text
    assert clean.nothing_created()


def test_names_the_administrator_allows_reach_the_server(clean: Stack) -> None:
    body = start_body(name="team", misc={})
    body["env"].update(TEAM_PROJECT="alpha", JUPYTER_CONFIG_DIR="/opt/shared/jupyter")
    # The hub's guess of the server's URL is not the hub's to set: the backend decides where it binds.
    body["env"]["JUPYTERHUB_SERVICE_URL"] = "http://0.0.0.0:1/elsewhere/"
    response = clean.start("hubB", body)
    assert response.status_code == 200, response.text
    address = decoded(response)["service"]
    echoed = httpx.get(f"{address}/?echo=TEAM_PROJECT&echo=JUPYTER_CONFIG_DIR&echo=JUPYTERHUB_USER", timeout=5)
    assert echoed.json()["echo"] == {
        "TEAM_PROJECT": "alpha", "JUPYTER_CONFIG_DIR": "/opt/shared/jupyter", "JUPYTERHUB_USER": "alice",
    }  # fmt: skip
    assert not address.endswith(":1")

    # The same names from a hub whose administrator did not allow them: refused.
    response = clean.start("hubA", start_body(name="team-a", misc={}, env={**body["env"]}))
    assert response.status_code == 419
    assert "to servers: JUPYTER_CONFIG_DIR, TEAM_PROJECT." in decoded(response)["args"][0]
    assert [key for key in clean.record_keys() if ":hubA:" in key] == []
