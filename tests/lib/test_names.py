"""DNS-safe names: a table of awkward user and server names, checked against KubeSpawner's own slugs."""

from __future__ import annotations

import re

import pytest
from kubespawner import slugs as kubespawner_slugs

from outpost import names

AWKWARD = [
    "alice", "Alice", "alice@example.org", "alice.smith", "a_b", "1user", "-leading", "trailing-", "two--hyphens",
    "ünïcödé", "李小龙", "emoji🙂", "", "x" * 48, "x" * 49, "y" * 100, "a" * 30 + "---" + "b" * 30, "jupyter-alice",
]  # fmt: skip


@pytest.mark.parametrize("name", AWKWARD)
def test_slugs_equal_kubespawners(name: str) -> None:
    assert names.safe_slug(name) == kubespawner_slugs.safe_slug(name)
    assert names.safe_slug(name, 48) == kubespawner_slugs.safe_slug(name, max_length=48)
    assert names.label_value(name) == kubespawner_slugs.safe_slug(
        name, is_valid=kubespawner_slugs.is_valid_label, max_length=63
    )
    assert names.multi_slug([name, "srv"]) == kubespawner_slugs.multi_slug([name, "srv"])


@pytest.mark.parametrize("name", AWKWARD)
def test_slugs_are_always_valid(name: str) -> None:
    slug = names.safe_slug(name)
    assert names.is_object_name(slug)
    assert names.is_label_value(names.label_value(name))


@pytest.mark.parametrize(
    ("user", "server", "pod_name"),
    [
        ("alice", "", "jupyter-alice"),
        ("alice", "srv", "jupyter-alice--srv"),
        ("Alice", "", "jupyter-alice---3bc51062"),
        ("alice@example.org", "My Server", "jupyter-alice-example-org--my-server---d7bee5b4"),  # one hash for both
        ("a--b", "", "jupyter-a-b---90827a2e"),
        ("x" * 40, "long-server-name", "jupyter-xxxxxxxxxxxxxxxxx--long-server-name---04b7641d"),
        ("李小龙", "", "jupyter-x---535320da"),
    ],
)
def test_pod_names_from_kubespawners_default_template(user: str, server: str, pod_name: str) -> None:
    rendered = names.object_name(names.expand("jupyter-{user_server}", names.template_fields(user, "7", server)))
    assert rendered == pod_name
    assert names.is_object_name(rendered)


def test_the_hubs_template_and_fields() -> None:
    fields = names.template_fields("Alice", "7", "")
    # The OutpostSpawner's default: a trailing "--" of the empty server name goes.
    assert names.expand("jupyter-{username}--{servername}", fields) == "jupyter-alice---3bc51062"
    assert names.expand("{unescaped_username}-{userid}", fields) == "Alice-7"
    assert names.expand("keep-", fields) == "keep-"
    with pytest.raises(ValueError, match=r"cannot expand '\{escaped_username\}'.*known fields: .*\{user_server\}"):
        names.expand("{escaped_username}", fields)


def test_colliding_inputs_get_different_slugs() -> None:
    """Different users that read the same once simplified stay apart (the hash)."""
    variants = ["alice.smith", "alice-smith", "Alice-Smith", "alice_smith", "alice smith"]
    slugs = {names.safe_slug(v) for v in variants}
    assert len(slugs) == len(variants)
    pods = {names.object_name(names.expand("jupyter-{user_server}", names.template_fields(v, "1", "s")))
            for v in variants}  # fmt: skip
    assert len(pods) == len(variants)


def test_junk_from_a_template_is_hashed_into_a_valid_name() -> None:
    junk = names.expand("{unescaped_username}'s server", names.template_fields("Bob Smith", "1", ""))
    assert junk == "Bob Smith's server"
    assert names.object_name(junk) == "bob-smith-s-server---" + names.hashed_slug(junk, 63)[-8:]
    assert names.is_object_name(names.object_name(junk))


@pytest.mark.parametrize(
    ("key", "valid"),
    [("team", True), ("hub.jupyter.org/username", True), ("example.org/a_b.c", True), ("a/b/c", False),
     ("Bad.Prefix/x", False), ("bad key", False), ("", False), ("x" * 64, False), ("-x", False)],
)  # fmt: skip
def test_qualified_keys(key: str, valid: bool) -> None:
    assert names.is_qualified_key(key) is valid


@pytest.mark.parametrize(
    "template",
    [
        "{username.__class__}", "{username.__class__.__init__.__globals__}", "{username[0]}", "{username!r}",
        "{username:>999999999}", "{username:{servername}}", "{0}", "{}", "{", "}", "jupyter-{username",
        "{username}" * 17,
    ],
)  # fmt: skip
def test_templates_are_data_not_expressions(template: str) -> None:
    """Only text and plain {field} placeholders: nothing str.format would evaluate or pad."""
    with pytest.raises(ValueError, match=f"cannot expand {re.escape(repr(template))}"):
        names.expand(template, names.template_fields("alice", "7", "srv"))


def test_escaped_braces_and_plain_placeholders_expand() -> None:
    fields = names.template_fields("alice", "7", "srv")
    assert names.template_fields_used("{{literal}}-{username}-{servername}") == ["username", "servername"]
    assert names.expand("{{x}}-{username}", fields) == "{x}-alice"


def test_a_template_names_at_most_its_share_of_fields() -> None:
    many = "-".join("{username}" for _ in range(names.TEMPLATE_FIELDS_MAX))
    assert names.template_fields_used(many) == ["username"] * names.TEMPLATE_FIELDS_MAX
    with pytest.raises(ValueError, match="more than 16 placeholders"):
        names.template_fields_used(many + "{userid}")


def test_unknown_fields_and_stray_braces_are_named() -> None:
    fields = names.template_fields("alice", "7", "srv")
    with pytest.raises(ValueError, match=r"unknown fields nope; known fields: .*\{username\}"):
        names.expand("jupyter-{nope}", fields)
    with pytest.raises(ValueError, match="write a literal brace as"):
        names.expand("jupyter-{username", fields)


@pytest.mark.parametrize(
    ("host", "short", "expected"),
    [
        ("jupyter-alice.ns", False, True),
        ("jupyter-alice.ns.svc", False, True),
        ("Jupyter-Alice.NS.svc.cluster.local.", False, True),
        ("jupyter-alice", False, False),
        ("jupyter-alice", True, True),
        ("jupyter-alice.other", True, False),
        ("jupyter-alice.ns.svc.evil.example", False, False),
        ("x.jupyter-alice.ns", False, False),
    ],
)
def test_a_service_host_is_that_service_in_that_namespace(host: str, short: bool, expected: bool) -> None:
    assert names.is_service_host(host, "jupyter-alice", "ns", "cluster.local", short=short) is expected
