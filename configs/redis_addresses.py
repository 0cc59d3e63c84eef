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
