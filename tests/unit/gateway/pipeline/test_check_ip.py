"""Step `check_ip` (gateway/pipeline/allowlist.py): the client address against the key's
allowlist, and the policy that some permissions need an allowlist at all."""

from __future__ import annotations

import pytest

from gateway.http.errors import IpNotAllowed
from gateway.pipeline.allowlist import check_ip
from tests.support.pipeline import FakeServices, context

WITHDRAW = "/public/v1/account/withdraw/crypto"


@pytest.fixture
def services() -> FakeServices:
    return FakeServices()


def with_key(services: FakeServices, ips: tuple[str, ...], ip: str,
             path: str = "/public/v1/account/balances", method: str = "GET",
             permissions: tuple[str, ...] = ("read", "withdraw")):  # type: ignore[no-untyped-def]
    ctx = context(services, path, method=method, ip=ip)
    ctx.key = services.mint(permissions, ips).record
    return ctx


def test_a_key_without_an_allowlist_passes_from_anywhere(services: FakeServices) -> None:
    for ip in ("198.51.100.7", "2001:db8::1", "10.0.0.1"):
        check_ip(with_key(services, (), ip))


@pytest.mark.parametrize(("allowed", "ip"), [
    (("198.51.100.7",), "198.51.100.7"),
    (("198.51.100.0/24",), "198.51.100.200"),
    (("203.0.113.1", "2001:db8::/32"), "2001:db8:1::5"),
    (("198.51.100.7",), "::ffff:198.51.100.7"),  # a dual-stack socket's view of IPv4
])
def test_an_address_inside_the_allowlist_passes(
        services: FakeServices, allowed: tuple[str, ...], ip: str) -> None:
    check_ip(with_key(services, allowed, ip))


@pytest.mark.parametrize(("allowed", "ip", "named"), [
    (("198.51.100.7",), "198.51.100.8", "198.51.100.8"),
    (("198.51.100.0/24",), "198.51.101.1", "198.51.101.1"),
    (("2001:db8::/32",), "2001:db9::1", "2001:db9::1"),
    (("198.51.100.7",), "::ffff:198.51.100.8", "198.51.100.8"),
    (("2001:db8::1",), "2001:0DB8:0:0::2", "2001:db8::2"),  # named in canonical form
])
def test_an_address_outside_is_refused_and_named(
        services: FakeServices, allowed: tuple[str, ...], ip: str, named: str) -> None:
    with pytest.raises(IpNotAllowed) as refused:
        check_ip(with_key(services, allowed, ip))
    assert refused.value.status == 403 and refused.value.code == "INVALID_IP_RESTRICTION"
    assert str(refused.value) == (
        f"The client IP address {named} is not allowed for this API key")


def test_an_ipv4_allowlist_does_not_admit_the_same_bits_in_ipv6(services: FakeServices) -> None:
    with pytest.raises(IpNotAllowed):
        check_ip(with_key(services, ("0.0.0.0/0",), "2001:db8::1"))


def test_the_policy_requires_an_allowlist_for_its_permissions(services: FakeServices) -> None:
    with pytest.raises(IpNotAllowed) as refused:
        check_ip(with_key(services, (), "198.51.100.7", WITHDRAW, "POST"))
    assert "'withdraw' permission requires an API key with an IP allowlist" in str(refused.value)
    # With one, and from inside it, the same route passes; from outside, it is refused.
    check_ip(with_key(services, ("198.51.100.7",), "198.51.100.7", WITHDRAW, "POST"))
    with pytest.raises(IpNotAllowed):
        check_ip(with_key(services, ("198.51.100.7",), "198.51.100.9", WITHDRAW, "POST"))


def test_the_policy_leaves_other_permissions_alone(services: FakeServices) -> None:
    check_ip(with_key(services, (), "198.51.100.7", "/public/v1/account/orders", "POST"))
