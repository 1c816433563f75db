"""The env allow-list: the protocol's names pass, the rest and the code-loading ones only when allowed."""

from __future__ import annotations

import pytest
from outpostspawner import OutpostSpawner

from outpost.backends.standins import HubStandIn, OrmSpawnerStandIn, UserStandIn
from outpost.env_policy import DECIDED_BY_OUTPOST, screen_env
from outpost.overrides import refused_overrides, refused_templates
from outpost.settings import DEFAULT_OVERRIDES, HubOptions

# Read from jupyter_core, jupyter_server and jupyterhub's singleuser package (see env_policy.LOADS_CODE_*).
LOADS_CODE = [
    "JUPYTER_CONFIG_DIR", "JUPYTER_CONFIG_PATH", "JUPYTER_PATH", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR",
    "JUPYTER_PREFER_ENV_PATH", "JUPYTER_PLATFORM_DIRS", "JUPYTER_NO_CONFIG", "JUPYTER_USE_PROGRAMDATA",
    "JUPYTER_ALLOW_INSECURE_WRITES", "JUPYTER_TOKEN_FILE", "JUPYTER_GATEWAY_URL",
    "JUPYTER_GATEWAY_TOKEN_RENEWER_CLASS", "JUPYTER_GATEWAY_CLIENT_KEY", "JUPYTER_DEFAULT_PROVISIONER_NAME",
    "JUPYTERHUB_SINGLEUSER_APP", "JUPYTERHUB_SINGLEUSER_EXTENSION", "JUPYTERHUB_SINGLEUSER_TEST_EXTENSION",
    "JUPYTERHUB_SINGLEUSER_LOAD_OTHER_EXTENSIONS", "JUPYTERHUB_ROOT_DIR",
]  # fmt: skip
INTERPRETERS = ["LD_PRELOAD", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONWARNINGS", "BROWSER", "BASH_ENV", "PATH",
                "HOME", "jupyterhub_user", "Jupyter_Path", "JUPYTERHUB", "JPY", ""]  # fmt: skip


def test_protocol_names_pass_with_their_values() -> None:
    env = {"JUPYTERHUB_API_TOKEN": "t", "JUPYTERHUB_USER": "alice", "JPY_API_TOKEN": "t", "JUPYTER_TOKEN": "x",
           "JUPYTERHUB_FLAVORS_UPDATE_URL": "http://hub/x", "JUPYTERHUB_STAGE": "prod"}  # fmt: skip
    verdict = screen_env(env, ())
    assert verdict.env == env and verdict.refused == []


@pytest.mark.parametrize("name", LOADS_CODE + INTERPRETERS)
def test_refused_unless_the_administrator_allows_it(name: str) -> None:
    assert screen_env({name: "/home/bob/.evil", "JUPYTERHUB_USER": "alice"}, ()).refused == [name]
    allowed = screen_env({name: "/opt/shared", "JUPYTERHUB_USER": "alice"}, ("SOMETHING_ELSE", name))
    assert allowed.refused == [] and allowed.env == {name: "/opt/shared", "JUPYTERHUB_USER": "alice"}


def test_patterns_are_fnmatch_globs_and_case_sensitive() -> None:
    env = {"MY_TEAM_A": "1", "MY_TEAM_B": "2", "my_team_c": "3", "OTHER": "4", "X1": "5", "X12": "6"}
    verdict = screen_env(env, ("MY_TEAM_*", "X?"))
    assert verdict.env == {"MY_TEAM_A": "1", "MY_TEAM_B": "2", "X1": "5"}
    assert verdict.refused == ["OTHER", "X12", "my_team_c"]
    assert screen_env({"LD_PRELOAD": "x", "PATH": "y"}, ("*",)).refused == []  # the administrator's choice


@pytest.mark.parametrize("name", sorted(DECIDED_BY_OUTPOST))
def test_names_the_outpost_decides_are_dropped_unless_allowed(name: str) -> None:
    assert screen_env({name: "/hub/path", "JUPYTERHUB_USER": "a"}, ()) == screen_env({"JUPYTERHUB_USER": "a"}, ())
    assert screen_env({name: "/hub/path"}, (name,)).env == {name: "/hub/path"}


@pytest.mark.asyncio(loop_scope="session")
async def test_what_a_real_outpostspawner_sends_by_default_passes() -> None:
    """OutpostSpawner 2.2 on JupyterHub (get_env, then get_custom_env and get_custom_misc), with internal_ssl."""
    spawner = OutpostSpawner(
        user=UserStandIn("alice", 7), hub=HubStandIn("http://hub:8081/hub/api"), orm_spawner=OrmSpawnerStandIn("srv"),
        api_token="secret", oauth_client_id="jupyterhub-user-alice-srv", admin_access=True, debug=True,
        default_url="/lab", disable_user_config=True, cookie_options={"secure": True}, internal_ssl=True,
        cert_paths={"keyfile": "/hub/k", "certfile": "/hub/c", "cafile": "/hub/ca"},
        custom_env={"JUPYTERHUB_STAGE": "prod", "JUPYTERHUB_FLAVORS_UPDATE_URL": "http://hub/outpostflavors/x"},
    )  # fmt: skip
    env = await spawner.get_custom_env()
    misc = await spawner.get_custom_misc()
    assert {"JUPYTERHUB_SERVICE_URL", "JUPYTERHUB_SSL_KEYFILE", "JUPYTERHUB_DEBUG"} <= set(env)  # it sent them

    verdict = screen_env(env, HubOptions().allowed_env)
    assert verdict.refused == []
    assert verdict.env == {key: value for key, value in env.items() if key not in DECIDED_BY_OUTPOST}
    assert sorted(misc) == sorted(DEFAULT_OVERRIDES)
    assert refused_overrides("hubA", misc, HubOptions().allowed_overrides, None) == []
    assert refused_templates(misc) == []
