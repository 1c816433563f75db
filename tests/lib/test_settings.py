"""Loading the one Settings object: upstream pods' environment names, the files it reads, and
configuration mistakes reported by the key as the YAML file writes it, with the closest valid key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from cryptography.fernet import Fernet

from outpost.errors import ConfigurationError
from outpost.settings import Settings, load_settings
from tests.lib.test_credits import CONFIG as CREDITS


@pytest.fixture(autouse=True)
def crypt_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTPOST_CRYPT_KEY", Fernet.generate_key().decode())


def test_hub_credentials_from_upstreams_secret_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("usernames", "one;two")
    monkeypatch.setenv("passwords", "pw1;pw2")
    assert load_settings().hub_credentials() == {"one": "pw1", "two": "pw2"}
    monkeypatch.setenv("OUTPOST_HUB_USERNAMES", "ours")  # our names win when both are set
    monkeypatch.setenv("OUTPOST_HUB_PASSWORDS", "secret")
    assert load_settings().hub_credentials() == {"ours": "secret"}


def test_config_file_alias(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OUTPOST_CONFIG_FILE", str(tmp_path / "outpost_config.py"))
    assert load_settings().backend_config == tmp_path / "outpost_config.py"
    monkeypatch.setenv("OUTPOST_BACKEND_CONFIG", str(tmp_path / "ours.py"))
    assert load_settings().backend_config == tmp_path / "ours.py"


def test_flavors_and_credits_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    flavors, credits = tmp_path / "flavors.yaml", tmp_path / "credits.yaml"
    flavors.write_text(yaml.safe_dump({"flavors": {"small": {"max": 2}}, "hubs": {"a": {"jupyterhub_name": "hubA"}}}))
    credits.write_text(yaml.safe_dump(CREDITS))
    monkeypatch.setenv("OUTPOST_FLAVORS_PATH", str(flavors))
    monkeypatch.setenv("OUTPOST_CREDITS_PATH", str(credits))
    settings = load_settings()
    assert set(settings.flavor_policy().flavors) == {"small"} and set(settings.flavor_policy().hubs) == {"a"}
    assert set(settings.credit_policy().credits) == {"standard", "gpu"}


def test_missing_files_mean_none(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OUTPOST_FLAVORS_PATH", str(tmp_path / "no.yaml"))
    monkeypatch.setenv("OUTPOST_CREDITS_PATH", str(tmp_path))  # a directory is no file either
    settings = load_settings()
    assert not settings.flavor_policy().configured and settings.credit_policy().credits == {}


def test_bad_files_and_double_configuration_are_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    broken, values = tmp_path / "credits.yaml", tmp_path / "values.yaml"
    broken.write_text("credits: [unclosed")
    monkeypatch.setenv("OUTPOST_CREDITS_PATH", str(broken))
    with pytest.raises(ConfigurationError, match="OUTPOST_CREDITS_PATH .*cannot read it"):
        load_settings()
    broken.write_text(yaml.safe_dump({"credits": {"a": 1}}))
    with pytest.raises(ConfigurationError, match="credits.credits.a: must be a mapping"):
        load_settings()
    broken.write_text(yaml.safe_dump(CREDITS))
    values.write_text(yaml.safe_dump({"credits": CREDITS}))
    with pytest.raises(ConfigurationError, match="both in the values and in OUTPOST_CREDITS_PATH"):
        load_settings(values)
    monkeypatch.delenv("OUTPOST_CREDITS_PATH")
    assert set(load_settings(values).credit_policy().hubs) == {"partners", "everyone"}  # the values' credits: key


@pytest.mark.parametrize(("given", "kept"), [("/outpost/", "/outpost"), ("", ""), ("/", ""), ("/a/b", "/a/b")])
def test_base_path_is_normalised(monkeypatch: pytest.MonkeyPatch, given: str, kept: str) -> None:
    monkeypatch.setenv("OUTPOST_BASE_PATH", given)
    assert load_settings().base_path == kept


@pytest.mark.parametrize("bad", ["outpost", "//evil.example", "/a\nb"])
def test_a_base_path_must_be_a_path(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv("OUTPOST_BASE_PATH", bad)
    with pytest.raises(ConfigurationError, match="OUTPOST_BASE_PATH must be a path"):
        load_settings()


def test_settings_fields_keep_their_names() -> None:
    settings = Settings(crypt_key=Fernet.generate_key().decode(), hub_usernames="a", hub_passwords="b")
    assert settings.hub_credentials() == {"a": "b"}


@pytest.mark.parametrize(
    ("redis_url", "ports"),
    [
        ("unix:///tmp/redis.sock", {9000, 2022}),
        ("redis://localhost", {9000, 2022, 6379}),
        ("redis://r:7000/0", {9000, 2022, 7000}),
    ],
)
def test_the_outpost_s_own_ports_come_from_its_settings(redis_url: str, ports: set[int]) -> None:
    settings = Settings(crypt_key=Fernet.generate_key().decode(), api_port=9000, ssh_port=2022, redis_url=redis_url)
    assert settings.own_ports() == ports


FLAVOR = "flavors:\n  small: {max: 1}\n"


@pytest.mark.parametrize(
    "yaml_text, expected",
    [
        pytest.param("sshPublicKey: []\n", "sshPublicKey: unknown key; did you mean sshPublicKeys?", id="camel"),
        pytest.param("ssh_public_key: []\n", "ssh_public_key: unknown key; did you mean ssh_public_keys?", id="snake"),
        pytest.param("sshPort: 70000\n", "sshPort: Input should be less than or equal to 65535", id="value"),
        pytest.param("hubOptions:\n  h:\n    allowedOverride: all\n",
                     "hubOptions.h.allowedOverride: unknown key; did you mean allowedOverrides?", id="nested"),
        pytest.param(FLAVOR + "users:\n  alice:\n    authentification: {name: alice}\n",
                     "users.alice.authentification: unknown key; did you mean authentication?", id="user-rule-key"),
        pytest.param(FLAVOR + "hubs:\n  h:\n    jupyterhubName: x\n",
                     "hubs.h.jupyterhubName: unknown key; did you mean jupyterhub_name?", id="hub-rule-key"),
        pytest.param("flavors:\n  small: {max: 1, maxPerUsr: 2}\n",
                     "flavors.small.maxPerUsr: unknown key; did you mean maxPerUser?", id="flavor-key"),
        # A user rule's key one level too far left: a rule named `flavors` that is no mapping.
        pytest.param(FLAVOR + "users:\n  alice:\n    authentication: {name: alice}\n  flavors: [small]\n",
                     "users.flavors: must be a mapping", id="misindented-rule-key"),
        # The Helm values' grouped form: a rule beside `users:` instead of under it was dropped unseen.
        pytest.param("flavors:\n  flavors:\n    small: {max: 1}\n  users:\n    a: {authentication: {name: a}}\n"
                     "  bob:\n    authentication: {name: bob}\n", "flavors.bob: unknown key", id="grouped-stray"),
        pytest.param("flavors:\n  flavors:\n    small: {max: 1}\n  user:\n    a: {authentication: {name: a}}\n",
                     "flavors.user: unknown key; did you mean users?", id="grouped-typo"),
        pytest.param("flavors:\n  small: {max: 1}\n  users:\n    alice: {authentication: {name: alice}}\n",
                     "is `users:` indented under `flavors:` by mistake?", id="users-under-flavors"),
    ],
)  # fmt: skip
def test_mistakes_name_the_key_as_written(tmp_path: Path, yaml_text: str, expected: str) -> None:
    config = tmp_path / "values.yaml"
    config.write_text(yaml_text)
    with pytest.raises(ConfigurationError) as caught:
        load_settings(config, crypt_key=Fernet.generate_key().decode())
    assert expected in caught.value.message
    assert "Value error" not in caught.value.message and "Extra inputs" not in caught.value.message


def test_correct_grouped_rules_still_load(tmp_path: Path) -> None:
    config = tmp_path / "values.yaml"
    config.write_text(
        "flavors:\n  flavors:\n    small: {max: 1}\n  users:\n    a: {authentication: {name: a}}\n"
        "  hubs:\n    h: {jupyterhub_name: x}\n  maxPerUserTotal: 2\n"
    )
    policy = load_settings(config, crypt_key=Fernet.generate_key().decode()).flavor_policy()
    assert (list(policy.flavors), list(policy.users), list(policy.hubs)) == (["small"], ["a"], ["h"])
    assert policy.max_per_user_total == 2


CREDENTIALS = "hubUsernames: jupyterhub-prod;jupyterhub-dev\nhubPasswords: pw1;pw2\n"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHhGVtnBw0uS4k0Bf3dWFq8pBvR6Kk0qbRXnD2k7rVxL hub"


@pytest.mark.parametrize(
    "yaml_text, expected",
    [
        pytest.param("hubOptions:\n  jupyterhub-prd:\n    allowedEnv: ['TEAM_*']\n",
                     "hubOptions.jupyterhub-prd: no hub credential is named 'jupyterhub-prd'; "
                     "did you mean jupyterhub-prod?", id="hubOptions"),
        pytest.param("hubOptions:\n  jupyterhub-dve:\n    callbackUrls: ['https://hub.example.org/hub/api/']\n",
                     "hubOptions.jupyterhub-dve: no hub credential is named 'jupyterhub-dve'; "
                     "did you mean jupyterhub-dev?", id="callbackUrls"),
        pytest.param(f"sshPublicKeys:\n  - {KEY}\n  - {{hub: Jupyterhub-Prod, key: {KEY}}}\n",
                     "sshPublicKeys[1].hub: no hub credential is named 'Jupyterhub-Prod'; "
                     "did you mean jupyterhub-prod?", id="sshPublicKeys"),
        pytest.param("hubOptions:\n  staging:\n    recreateTunnels: false\n",
                     "hubOptions.staging: no hub credential is named 'staging'; the hubs are jupyterhub-prod, "
                     "jupyterhub-dev", id="nothing-close"),
    ],
)  # fmt: skip
def test_a_hub_name_no_credential_has_is_refused_with_the_closest_one(
    tmp_path: Path, yaml_text: str, expected: str
) -> None:
    """A misspelled hub would configure nobody and leave the real hub without its limits."""
    config = tmp_path / "values.yaml"
    config.write_text(CREDENTIALS + yaml_text)
    with pytest.raises(ConfigurationError) as caught:
        load_settings(config)
    assert caught.value.message == f"invalid configuration: {expected}"


def test_hub_names_are_those_of_the_credentials_from_the_environment_too(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "values.yaml"
    config.write_text(
        f"hubOptions:\n  hubA: {{allowedEnv: ['TEAM_*']}}\n  hubB: {{callbackUrls: ['https://b.example.org/']}}\n"
        f"sshPublicKeys:\n  - {{hub: hubA, key: {KEY}}}\n"
    )
    assert set(load_settings(config).hub_options) == {"hubA", "hubB"}  # no credentials: nothing to compare with
    monkeypatch.setenv("OUTPOST_HUB_USERNAMES", "hubA;hubB")
    monkeypatch.setenv("OUTPOST_HUB_PASSWORDS", "pw1;pw2")
    assert load_settings(config).hub_names() == ["hubA", "hubB"]
    monkeypatch.setenv("usernames", "hubA")  # upstream's name for the same secret key: ours wins
    monkeypatch.setenv("OUTPOST_HUB_USERNAMES", "hubA;hubC")
    with pytest.raises(ConfigurationError, match=r"hubOptions.hubB: no hub credential is named 'hubB'; did you"):
        load_settings(config)


@pytest.mark.parametrize("bad", ["10:30", "0:30:100", "20:30:10", "10:101:100", "ten", "10:30:100:5", ""])
def test_ssh_max_startups_is_start_rate_full(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv("OUTPOST_SSH_MAX_STARTUPS", bad)
    with pytest.raises(ConfigurationError, match="ssh_max_startups: .*max startups"):
        load_settings()


def test_login_grace_no_longer_than_ten_minutes(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().ssh_login_grace_seconds <= 120  # OpenSSH's LoginGraceTime, the longest default
    monkeypatch.setenv("OUTPOST_SSH_LOGIN_GRACE_SECONDS", "601")
    with pytest.raises(ConfigurationError, match="ssh_login_grace_seconds"):
        load_settings()
