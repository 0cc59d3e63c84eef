"""The composition root: the one module that knows every concrete class.

Config, then clients, then cache backends, then repositories, then services. The cache backend
is a ``Selector`` keyed on ``APIKEY_CACHE_BACKEND`` whose branch names are the allowed values;
each branch is built by the recipes in ``app.services.cache_factories`` — the same ones
``build_apikey_cache_backend`` uses — so the two build the same object graph.
"""

from __future__ import annotations

from dependency_injector import containers, providers

from app.clients.redis_client import build_optional_redis_client
from app.clients.redis_topologies import (
    build_optional_cluster_client,
    build_optional_sentinel_client,
)
from app.db.engine import build_engine, build_session_factory
from app.repositories.sql import SqlApiKeyRepository, SqlEventLogRepository
from app.services import cache_factories
from app.services.apikey_service import ApiKeyService
from app.services.metrics import CacheMetrics
from configs import Settings


class Container(containers.DeclarativeContainer):
    """Built per process (and per test) by ``build_container``; wired by ``create_app``."""

    config = providers.Configuration(strict=True)

    metrics = providers.Singleton(CacheMetrics)

    # One client per process, for the topology in ``REDIS_TOPOLOGY`` (``None`` when that
    # topology has no address: the shared backends then fall back to memory).
    redis_client = providers.Selector(
        config.REDIS_TOPOLOGY,
        single=providers.Singleton(
            build_optional_redis_client,
            url=config.REDIS_URL,
            socket_timeout_ms=config.REDIS_SOCKET_TIMEOUT_MS,
            connect_timeout_ms=config.REDIS_CONNECT_TIMEOUT_MS,
            max_connections=config.REDIS_MAX_CONNECTIONS,
        ),
        sentinel=providers.Singleton(
            build_optional_sentinel_client,
            config.REDIS_SENTINELS_PARSED,
            service_name=config.REDIS_SENTINEL_SERVICE,
            username=config.REDIS_USERNAME,
            password=config.REDIS_PASSWORD,
            db=config.REDIS_DB,
            tls=config.REDIS_TLS,
            tls_ca_file=config.REDIS_TLS_CA_FILE,
            sentinel_username=config.REDIS_SENTINEL_USERNAME,
            sentinel_password=config.REDIS_SENTINEL_PASSWORD,
            socket_timeout_ms=config.REDIS_SOCKET_TIMEOUT_MS,
            connect_timeout_ms=config.REDIS_CONNECT_TIMEOUT_MS,
            max_connections=config.REDIS_MAX_CONNECTIONS,
        ),
        cluster=providers.Singleton(
            build_optional_cluster_client,
            config.REDIS_CLUSTER_NODES_PARSED,
            username=config.REDIS_USERNAME,
            password=config.REDIS_PASSWORD,
            tls=config.REDIS_TLS,
            tls_ca_file=config.REDIS_TLS_CA_FILE,
            socket_timeout_ms=config.REDIS_SOCKET_TIMEOUT_MS,
            connect_timeout_ms=config.REDIS_CONNECT_TIMEOUT_MS,
            max_connections=config.REDIS_MAX_CONNECTIONS,
        ),
    )

    memory_cache = providers.Singleton(
        cache_factories.memory_cache, max_entries=config.APIKEY_CACHE_MAX_ENTRIES
    )

    guarded_redis_cache = providers.Factory(
        cache_factories.redis_cache,
        key_prefix=config.APIKEY_CACHE_REDIS_KEY_PREFIX,
        failure_threshold=config.CACHE_BREAKER_FAILURE_THRESHOLD,
        reset_after_seconds=config.CACHE_BREAKER_RESET_SECONDS,
        operation_timeout_ms=config.REDIS_SOCKET_TIMEOUT_MS,
        metrics=metrics,
    )

    redis_cache = providers.Singleton(
        cache_factories.shared_cache_or_memory,
        client=redis_client,
        shared=guarded_redis_cache.provider,
        memory=memory_cache.provider,
        backend_name="redis",
    )

    tiered_cache = providers.Singleton(
        cache_factories.shared_cache_or_memory,
        client=redis_client,
        shared=providers.Factory(
            cache_factories.tiered_cache_over,
            guard=guarded_redis_cache.provider,
            l1_ttl_seconds=config.APIKEY_CACHE_L1_TTL_SECONDS,
            l1_max_entries=config.APIKEY_CACHE_L1_MAX_ENTRIES,
            ack_timeout_ms=config.APIKEY_INVALIDATION_ACK_TIMEOUT_MS,
        ).provider,
        memory=memory_cache.provider,
        backend_name="tiered",
    )

    apikey_cache = providers.Selector(
        config.APIKEY_CACHE_BACKEND,
        memory=memory_cache,
        redis=redis_cache,
        tiered=tiered_cache,
    )

    apikey_records = providers.Singleton(
        cache_factories.signed_records_beside,
        cache=apikey_cache,
        secret=config.APIKEY_CACHE_HMAC_SECRET,
        previous_secrets=config.APIKEY_CACHE_HMAC_PREVIOUS_SECRETS,
    )

    database_engine = providers.Singleton(
        build_engine, url=config.DATABASE_URL, timeout_seconds=config.DATABASE_TIMEOUT_SECONDS
    )

    database_sessions = providers.Singleton(build_session_factory, engine=database_engine)

    apikey_repository = providers.Singleton(
        SqlApiKeyRepository,
        session_factory=database_sessions,
        timeout_seconds=config.DATABASE_TIMEOUT_SECONDS,
    )

    event_log = providers.Singleton(
        SqlEventLogRepository,
        session_factory=database_sessions,
        timeout_seconds=config.DATABASE_TIMEOUT_SECONDS,
    )

    # Replicated topologies can lose an acknowledged write in a failover (see ApiKeyService).
    shared_writes_can_be_lost = providers.Selector(
        config.REDIS_TOPOLOGY,
        single=providers.Object(False),
        sentinel=providers.Object(True),
        cluster=providers.Object(True),
    )

    apikey_service = providers.Singleton(
        ApiKeyService,
        cache=apikey_cache,
        repository=apikey_repository,
        cache_ttl_seconds=config.APIKEY_CACHE_TTL_SECONDS,
        negative_ttl_seconds=config.APIKEY_NEGATIVE_TTL_SECONDS,
        negative_max_entries=config.APIKEY_NEGATIVE_MAX_ENTRIES,
        record_memo_max_entries=config.APIKEY_RECORD_MEMO_MAX_ENTRIES,
        metrics=metrics,
        event_log=event_log,
        poll_interval_seconds=config.APIKEY_REVOCATION_POLL_SECONDS,
        lease_seconds=config.APIKEY_LEASE_SECONDS,
        finality_timeout_seconds=config.APIKEY_REVOCATION_TIMEOUT_SECONDS,
        records=apikey_records,
        shared_writes_can_be_lost=shared_writes_can_be_lost,
    )


def build_container(settings: Settings) -> Container:
    """A fresh container configured from ``settings`` (one per process, one per test)."""
    container = Container()
    container.config.from_dict(settings.cache_settings())
    return container
