"""``host:port`` lists for the Sentinel and Cluster settings, parsed once at load.

``REDIS_SENTINELS`` and ``REDIS_CLUSTER_NODES`` are comma-separated ``host:port`` lists. An IPv6
address is written in brackets (``[::1]:26379``) so its colons cannot be mistaken for the port's.
The settings validate the text with this parser, and hand the parsed pairs to the container, so
the client builders never see a malformed list.
"""

from __future__ import annotations

HostPort = tuple[str, int]


def parse_host_ports(text: str) -> list[HostPort]:
    """``"a:1, [::1]:2"`` → ``[("a", 1), ("::1", 2)]``; a malformed entry raises ``ValueError``.

    The message quotes only the offending entry (addresses are not secrets) and names the fix.
    """
    addresses: list[HostPort] = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        if entry.startswith("["):
            host, bracket, rest = entry[1:].partition("]")
            if not bracket or not rest.startswith(":"):
                raise ValueError(f"{entry!r} is not [ipv6]:port")
            port_text = rest[1:]
        else:
            host, colon, port_text = entry.rpartition(":")
            if not colon or ":" in host:
                raise ValueError(f"{entry!r} is not host:port (write IPv6 as [::1]:port)")
        if not host or not port_text.isdigit() or not 0 < int(port_text) < 65_536:
            raise ValueError(f"{entry!r} is not host:port with a port 1-65535")
        addresses.append((host, int(port_text)))
    if not addresses:
        raise ValueError("no host:port given")
    return addresses


def hash_tag(key: str) -> str:
    """The part of ``key`` a Redis Cluster hashes: the first non-empty ``{...}``, else all."""
    start = key.find("{")
    if start != -1:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def prefix_keeps_pairs_on_one_slot(prefix: str) -> bool:
    """Whether a key's value (``<prefix><digest>``) and its record
    (``<prefix>rec:{<prefix><digest>}``) hash alike on a cluster, as the record store needs.
    The answer depends on the prefix alone (a digest is hex: no braces)."""
    value = prefix + "0" * 64
    return hash_tag(value) == hash_tag(f"{prefix}rec:{{{value}}}")
