"""Two hosts, one Redis, one PostgreSQL, and a link per host and store that a test can break.

``tests/support/multihost.py`` builds the topology; ``tests/support/tcp_proxy.py`` is the link::

    host A: game-api serve --workers 2 --- link A/redis ---+--> redis-server (private, free port)
                                      \\--- link A/db ------+--> PostgreSQL (throw-away database)
    host B: game-api serve --workers 2 --- link B/redis ---+
                                      \\--- link B/db ------+

Each host's ``REDIS_URL`` and ``DATABASE_URL`` point at its own two links (loopback TCP
proxies), so one host can be cut from a store (connections reset), or hung from it (bytes stop,
sockets stay open), while the other host and the store itself stay healthy: a partition, as
production sees it. A worker can also be frozen (SIGSTOP) and thawed (SIGCONT).

``test_revocation_partitions.py`` holds the promise "a revocation is final when it returns" to
that: for each backend and fault, no request sent after revoke returned is admitted with the
revoked key, on any worker of any host. ``test_tcp_proxy.py`` checks the link itself (fast).

``test_sentinel_failover.py`` (and ``test_cluster_node_killed.py``) use the same two hosts without
the links, reaching a Sentinel set (a Redis Cluster) directly: there the fault is in Redis itself,
a failover or a killed primary under traffic, and the figures are the longest window of failed
valid requests, admits of keys revoked during and after it, and cache hits on the new primary.

Run: ``.venv/bin/pytest tests/multihost -s`` (``-s`` prints one line of figures per case; the
partition suite is marked ``slow`` and ``postgres``, about 8 s per case).
"""
