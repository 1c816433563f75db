"""Configuration mistakes are reported by the key as the YAML file writes it, with the closest valid key."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from outpost.errors import ConfigurationError
from outpost.settings import load_settings

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
