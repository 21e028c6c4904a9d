"""IP addresses and networks named in settings: parsed once, matched the same way everywhere.

Used for TRUSTED_PROXIES (core/client_ip.py), METRICS_ALLOWED_IPS (project/views.py) and the
settings' own validation at start-up. No Django here: settings import it.
"""

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=16)
def parse_networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    """Addresses or CIDR networks; ValueError names the entry that is neither."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip().strip("[]"), strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network") from None
    return tuple(networks)


def address_in(address: str | None, entries: Iterable[str]) -> bool:
    """Whether `address` (an IP, possibly [bracketed] IPv6) falls in one of the networks `entries` name."""
    try:
        ip = ipaddress.ip_address((address or "").strip().strip("[]"))
    except ValueError:
        return False
    return any(ip in network for network in parse_networks(tuple(entries)))
