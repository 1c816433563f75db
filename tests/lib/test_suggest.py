"""Unknown configuration keys: the keys the model at an error's place accepts, and the closest one
suggested. Small models of the same shapes as the settings (aliases, `dict[str, Model]`, optional
sections); tests/lib/test_settings.py shows the messages on the real settings."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, Field

from outpost.suggest import accepted_keys, camel, did_you_mean, model_at, unknown_key


class Rule(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    max_per_user: int = Field(0, alias="maxPerUser")
    weight: int = 0


class Section(BaseModel):
    allowed_overrides: list[str] = Field(default_factory=list, alias="allowedOverrides")  # names do not populate
    internal: str = Field("", exclude=True)


class Root(BaseModel):
    ssh_public_keys: list[str] = Field(default_factory=list)
    rules: dict[str, Rule] = Field(default_factory=dict)
    section: Section | None = None


@pytest.mark.parametrize(
    ("name", "written"),
    [("ssh_public_keys", "sshPublicKeys"), ("port", "port"), ("max_per_user_total", "maxPerUserTotal")],
)
def test_camel_writes_settings_as_the_helm_values_do(name: str, written: str) -> None:
    assert camel(name) == written


def test_did_you_mean_names_the_closest_key_or_nothing() -> None:
    assert did_you_mean("sshPublicKey", ["sshPublicKeys", "sshPort"]) == "; did you mean sshPublicKeys?"
    assert did_you_mean("weigth", ["weight", "max"]) == "; did you mean weight?"
    assert did_you_mean("completely-else", ["weight", "max"]) == ""
    assert did_you_mean("x", []) == ""


def test_accepted_keys_are_aliases_and_names_where_names_populate() -> None:
    assert accepted_keys(Rule) == {"maxPerUser", "max_per_user", "weight"}
    assert accepted_keys(Section) == {"allowedOverrides"}  # no name without populate_by_name, no excluded field
    assert accepted_keys(Root) == {"ssh_public_keys", "rules", "section"}


@pytest.mark.parametrize(
    ("loc", "model"),
    [
        pytest.param((), Root, id="root"),
        pytest.param(("rules", "alice"), Rule, id="through-a-mapping-key"),
        pytest.param(("rules",), None, id="the-mapping-itself"),
        pytest.param(("section",), Section, id="optional-section"),
        pytest.param(("ssh_public_keys",), None, id="not-a-model"),
        pytest.param(("nowhere",), None, id="unknown-place"),
    ],
)
def test_model_at_follows_an_errors_path(loc: tuple[str, ...], model: type[BaseModel] | None) -> None:
    assert model_at(Root, loc) is model


def test_unknown_key_suggests_among_the_keys_at_that_place() -> None:
    assert unknown_key(Root, ("rules", "alice"), "maxPerUsr") == "unknown key; did you mean maxPerUser?"
    assert unknown_key(Root, ("section",), "allowedOverride") == "unknown key; did you mean allowedOverrides?"
    # Where names do not populate, the snake-case name is not accepted: the alias is what is suggested.
    assert unknown_key(Root, ("section",), "allowed_overrides") == "unknown key; did you mean allowedOverrides?"


def test_at_the_root_both_spellings_are_suggested() -> None:
    assert unknown_key(Root, (), "sshPublicKey") == "unknown key; did you mean sshPublicKeys?"
    assert unknown_key(Root, (), "ssh_public_key") == "unknown key; did you mean ssh_public_keys?"


def test_no_suggestion_where_no_model_is_known() -> None:
    assert unknown_key(Root, ("nowhere",), "weight") == "unknown key"
