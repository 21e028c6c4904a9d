"""In-process: rate limits without Redis, and whose address a limit counts."""

import pytest

from api.ratelimit import Reserves
from core.client_ip import client_ip
from tests.factories import PASSWORD, AuthorFactory
from tests.graphql_http import post_graphql
from tests.live import CREATE_TOKEN, error_codes


@pytest.mark.django_db
def test_without_redis_the_limits_count_in_the_process_memory_cache(client, settings):
    assert settings.CACHES["default"]["BACKEND"] == "django.core.cache.backends.locmem.LocMemCache"
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "createToken": (2, 10**9)}
    author = AuthorFactory.create()
    answers = [
        post_graphql(client, CREATE_TOKEN, {"username": author.username, "password": PASSWORD}) for _ in range(3)
    ]
    assert [error_codes(answer) for answer in answers] == [[], [], ["RATE_LIMITED"]]


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "trusted", "expected"),
    [
        ("203.0.113.5", None, [], "203.0.113.5"),
        # A client cannot pick its address by sending the header itself.
        ("203.0.113.5", "198.51.100.1", [], "203.0.113.5"),
        ("203.0.113.5", "198.51.100.1", ["127.0.0.1"], "203.0.113.5"),
        # Behind a trusted proxy: the right-most address that no trusted proxy added.
        ("127.0.0.1", "198.51.100.1", ["127.0.0.1"], "198.51.100.1"),
        ("127.0.0.1", "6.6.6.6, 198.51.100.1", ["127.0.0.1"], "198.51.100.1"),
        ("10.0.0.2", "198.51.100.1, 10.0.0.1", ["10.0.0.0/8"], "198.51.100.1"),
        ("127.0.0.1", "127.0.0.1", ["127.0.0.1"], "127.0.0.1"),
        ("::1", "2001:db8::7", ["::1"], "2001:db8::7"),
    ],
)
def test_client_ip_believes_x_forwarded_for_only_from_trusted_proxies(peer, forwarded_for, trusted, expected):
    assert client_ip(peer, forwarded_for, trusted) == expected


def test_a_reserve_serves_its_own_window_only_and_the_reserves_stay_bounded(monkeypatch):
    reserves = Reserves()
    owner = ("mutation", "author:1")
    reserves.put(owner, 7, 2)
    assert not reserves.take(owner, 8)  # the next window starts with nothing in reserve
    assert reserves.take(owner, 7) and reserves.take(owner, 7) and not reserves.take(owner, 7)
    reserves.put(owner, 7, 1)
    reserves.put(owner, 8, 1)  # a new window's reserve replaces the old one's
    assert reserves.take(owner, 8) and not reserves.take(owner, 8) and not reserves.take(owner, 7)

    monkeypatch.setattr(Reserves, "MAX_ENTRIES", 3)
    for author in range(5):
        reserves.put(("mutation", f"author:{author}"), 8, 1)
    held = [reserves.take(("mutation", f"author:{author}"), 8) for author in range(5)]
    assert held == [False, False, True, True, True]  # the oldest went
