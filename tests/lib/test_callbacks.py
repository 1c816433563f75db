"""The callback policy: which URLs a hub's `callbackUrls` admit, and which addresses are never called."""

from __future__ import annotations

import ipaddress

import pytest

from outpost.callbacks import CallbackPolicy, never_called, parse_prefix

on_loop = pytest.mark.asyncio(loop_scope="session")

OWN = {8080, 2222}
POLICY = CallbackPolicy({"hubA": ["https://hub.example.org/hub/api/", "http://10.0.0.5:8081"], "hubC": []}, OWN)


@pytest.mark.parametrize(
    "url",
    [
        "https://hub.example.org/hub/api/users/progress/events/alice/",
        "https://hub.example.org/hub/api",
        "https://HUB.example.ORG:443/hub/api/setuptunnel",
        "https://hub.example.org/hub/api/x/../outpostflavors/a",  # normalised to a path under the prefix
        "http://10.0.0.5:8081/anything",
    ],
)
def test_callback_urls_admit_their_origin_and_paths_below(url: str) -> None:
    assert POLICY.refusal("hubA", url) == ""


@pytest.mark.parametrize(
    "url",
    [
        "https://hub.example.org.evil.com/hub/api/",  # a string prefix, another host
        "https://hub.example.org:8443/hub/api/",  # another port
        "http://hub.example.org/hub/api/",  # another scheme (and port)
        "https://evil.com/hub/api/?https://hub.example.org/hub/api/",
        "https://hub.example.org@evil.com/hub/api/",  # user info: the host is evil.com
        "https://hub.example.org/hub/apiary",  # not below the path at a "/"
        "https://hub.example.org/hub/api/../admin",  # dot segments resolve outside the path
        "https://hub.example.org/hub/api/%2e%2e/admin",  # encoded dot segments, which servers may decode
        "https://hub.example.org/",
        "http://10.0.0.5/anything",
        "http://10.0.0.50:8081/",
        "ftp://hub.example.org/hub/api/",
        "not a url",
        "http://[::1",
    ],
)
def test_callback_urls_refuse_everything_else(url: str) -> None:
    assert POLICY.refusal("hubA", url) != ""


def test_an_empty_list_admits_nothing_and_no_list_admits_any_other_address() -> None:
    assert "hubOptions.hubC.callbackUrls" in POLICY.refusal("hubC", "https://hub.example.org/hub/api/")
    assert POLICY.restricts("hubC") and not POLICY.restricts("hubB")
    assert POLICY.refusal("hubB", "https://anywhere.example.net:9999/x") == ""
    assert POLICY.refusal("hubB", "http://127.0.0.1:8081/hub/api") == ""  # a hub on this machine
    assert POLICY.refusal("hubB", "http://10.1.2.3:8080/") == ""  # our port number, another machine


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local or cloud metadata"),
        ("http://[::ffff:169.254.169.254]/", "link-local or cloud metadata"),
        ("http://[fe80::1]/", "link-local or cloud metadata"),
        ("http://[fd00:ec2::254]/", "link-local or cloud metadata"),
        ("http://100.100.100.200/", "link-local or cloud metadata"),
        ("http://127.0.0.1:8080/hub/api", "own listener"),
        ("http://0.0.0.0:2222/", "own listener"),
        ("http://[::1]:8080/", "own listener"),
        ("http://127.0.0.2:8080/", "own listener"),
    ],
)
def test_literal_addresses_never_called_are_refused_with_or_without_a_list(url: str, reason: str) -> None:
    assert reason in POLICY.refusal("hubB", url)
    assert POLICY.refusal("hubA", url) != ""


def test_refusals_name_the_variables_of_a_start() -> None:
    env = {
        "JUPYTERHUB_EVENTS_URL": "https://hub.example.org/hub/api/users/progress/events/alice/",
        "JUPYTERHUB_SETUPTUNNEL_URL": "https://evil.example.com/steal",
        "JUPYTERHUB_FLAVORS_UPDATE_URL": "http://169.254.169.254/",
        "JUPYTERHUB_API_URL": "https://anything.example.com/",  # not a callback: never checked
    }
    refused = POLICY.refusals("hubA", env)
    assert [name for name, _ in refused] == ["JUPYTERHUB_SETUPTUNNEL_URL", "JUPYTERHUB_FLAVORS_UPDATE_URL"]
    assert all("evil" not in reason and "169.254.169.254/" not in reason for _, reason in refused)


@pytest.mark.parametrize(
    "entry",
    ["hub.example.org", "ftp://hub.example.org", "https://", "https://u:p@hub.example.org", "https://h/?q=1",
     "https://h/#f", "https://h:99999/", "https://h/a/../b"],
)  # fmt: skip
def test_malformed_prefixes_are_configuration_errors(entry: str) -> None:
    with pytest.raises(ValueError):
        parse_prefix(entry)


def test_never_called_covers_mapped_addresses_and_only_our_ports_locally() -> None:
    local = [ipaddress.ip_address("10.9.8.7")]
    assert never_called(ipaddress.ip_address("::ffff:a9fe:a9fe"), 80, OWN)
    assert never_called(ipaddress.ip_address("10.9.8.7"), 8080, OWN, local)
    assert not never_called(ipaddress.ip_address("10.9.8.7"), 8081, OWN, local)
    assert not never_called(ipaddress.ip_address("10.9.8.8"), 8080, OWN, local)
    assert not never_called(ipaddress.ip_address("192.0.2.1"), 443, OWN)
