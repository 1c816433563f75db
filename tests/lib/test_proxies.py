"""The caller's address: the socket peer, or what the configured proxies vouch for, never more."""

from __future__ import annotations

import pytest

from outpost.errors import ConfigurationError
from outpost.proxies import TrustedProxies
from outpost.settings import load_settings

# What Knative's path writes (from the function's view): a client's own entries, the client as the
# external gateway saw it, the gateways and the activator, and queue-proxy as the socket peer.
KNATIVE = ["6.6.6.6, 203.0.113.9, 10.8.0.5, 10.8.1.7, 10.8.2.2"]
PEER = "127.0.0.1"


@pytest.mark.parametrize(
    ("setting", "forwarded_for", "caller"),
    [
        ("", KNATIVE, PEER),  # nothing trusted: headers are never read
        ("0", KNATIVE, PEER),
        ("1", KNATIVE, "10.8.2.2"),  # only the peer is a proxy: the entry it wrote
        ("4", KNATIVE, "203.0.113.9"),
        ("5", KNATIVE, "6.6.6.6"),  # one hop too many reads what the client wrote: configure exactly
        ("9", KNATIVE, PEER),  # fewer entries than proxies: not the configured path
        ("127.0.0.0/8, 10.8.0.0/16", KNATIVE, "203.0.113.9"),  # the activator's hop changes nothing
        ("127.0.0.0/8, 10.8.0.0/16", ["6.6.6.6, 203.0.113.9, 10.8.0.5, 10.8.2.2"], "203.0.113.9"),
        ("127.0.0.0/8, 10.8.0.0/16", ["6.6.6.6", "203.0.113.9, 10.8.0.5"], "203.0.113.9"),  # two lines
        ("127.0.0.0/8, 10.8.0.0/16", ["10.8.9.9, 10.8.0.5"], PEER),  # all proxies: the peer
        ("127.0.0.0/8, 10.8.0.0/16", ["garbage, 10.8.0.5"], "garbage"),
        ("127.0.0.0/8, 10.8.0.0/16", [], PEER),
        ("10.8.0.0/16", KNATIVE, PEER),  # the peer itself is not trusted
        ("127.0.0.1, ::1", ["[2001:db8::7]:4711"], "2001:db8::7"),  # ports and brackets dropped
        ("127.0.0.1", ["198.51.100.4:8080"], "198.51.100.4"),
        ("127.0.0.1", ["2001:db8::7"], "2001:db8::7"),
        ("127.0.0.1", ["1.2.3.4,"], ""),  # an empty last entry is no address of a proxy
    ],
)
def test_caller(setting: str, forwarded_for: list[str], caller: str) -> None:
    assert TrustedProxies.parse(setting).caller(PEER, forwarded_for) == caller


@pytest.mark.parametrize("value", ["x", "10.0.0.0/33", "33", "-1", "10.0.0.0/8,", "١"])
def test_bad_values_are_refused_with_the_setting_named(value: str) -> None:
    with pytest.raises(ConfigurationError, match="trusted_proxies: .*trusted proxies"):
        load_settings(None, crypt_key="k", trusted_proxies=value)


@pytest.mark.parametrize(
    ("value", "parsed"), [(3, TrustedProxies(hops=3)), (["127.0.0.1"], TrustedProxies.parse("127.0.0.1"))]
)
def test_yaml_numbers_and_lists(value: object, parsed: TrustedProxies) -> None:
    assert load_settings(None, crypt_key="k", trusted_proxies=value).proxies() == parsed


def test_which_peers_are_proxies() -> None:
    assert not TrustedProxies.parse("").is_proxy("127.0.0.1")
    assert TrustedProxies.parse("1").is_proxy("203.0.113.9")  # a hop count: every peer is the last proxy
    networks = TrustedProxies.parse("10.0.0.0/8")
    assert networks.is_proxy("10.1.2.3") and not networks.is_proxy("127.0.0.1")
