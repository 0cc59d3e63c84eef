"""Redis topology settings: each topology needs its address; a bad value is one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from configs import ConfigError, load_settings
from configs.redis_addresses import parse_host_ports


def test_single_is_the_default_and_needs_no_address() -> None:
    settings = load_settings()
    assert settings.REDIS_TOPOLOGY == "single"
    assert settings.REDIS_SENTINEL_SERVICE == "mymaster"
    assert not settings.redis_is_configured()


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("127.0.0.1:26379", [("127.0.0.1", 26379)]),
        ("a:1, b:2 ,", [("a", 1), ("b", 2)]),
        ("[::1]:26379,127.0.0.1:7000", [("::1", 26379), ("127.0.0.1", 7000)]),
    ],
)
def test_host_port_lists_parse(text: str, parsed: list[tuple[str, int]]) -> None:
    assert parse_host_ports(text) == parsed


@pytest.mark.parametrize(
    "bad", ["", "host", "host:", ":1", "::1:26379", "[::1]26379", "h:0", "h:x"]
)
def test_malformed_host_port_lists_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_host_ports(bad)


@pytest.mark.parametrize(
    ("topology", "address"), [("sentinel", "REDIS_SENTINELS"), ("cluster", "REDIS_CLUSTER_NODES")]
)
def test_a_topology_without_its_address_is_one_clear_error(
    monkeypatch: pytest.MonkeyPatch, topology: str, address: str
) -> None:
    monkeypatch.setenv("REDIS_TOPOLOGY", topology)
    with pytest.raises(ConfigError, match=f"REDIS_TOPOLOGY={topology} needs {address}") as error:
        load_settings()
    assert "\n" not in str(error.value)


def test_a_malformed_seed_list_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_TOPOLOGY", "cluster")
    monkeypatch.setenv("REDIS_CLUSTER_NODES", "127.0.0.1:7000,nonsense")
    with pytest.raises(ConfigError, match="REDIS_CLUSTER_NODES: 'nonsense' is not host:port"):
        load_settings()


def test_a_cluster_refuses_a_database_number(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_TOPOLOGY", "cluster")
    monkeypatch.setenv("REDIS_CLUSTER_NODES", "127.0.0.1:7000")
    monkeypatch.setenv("REDIS_DB", "2")
    with pytest.raises(ConfigError, match="REDIS_DB must be 0 with REDIS_TOPOLOGY=cluster"):
        load_settings()


def test_data_node_settings_are_refused_with_single(monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``single`` they would be ignored: TLS asked for and silently not used."""
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6390/0")
    monkeypatch.setenv("REDIS_TLS", "true")
    monkeypatch.setenv("REDIS_PASSWORD", "not-shown-anywhere")
    with pytest.raises(ConfigError, match="REDIS_PASSWORD, REDIS_TLS apply to") as error:
        load_settings()
    assert "not-shown-anywhere" not in str(error.value)


def test_a_missing_ca_file_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REDIS_TOPOLOGY", "sentinel")
    monkeypatch.setenv("REDIS_SENTINELS", "127.0.0.1:26379")
    monkeypatch.setenv("REDIS_TLS", "true")
    monkeypatch.setenv("REDIS_TLS_CA_FILE", str(tmp_path / "absent.pem"))
    with pytest.raises(ConfigError, match="REDIS_TLS_CA_FILE: no such file"):
        load_settings()


@pytest.mark.parametrize(
    ("topology", "address", "value"),
    [
        ("single", "REDIS_URL", "redis://127.0.0.1:6390/0"),
        ("sentinel", "REDIS_SENTINELS", "127.0.0.1:26379"),
        ("cluster", "REDIS_CLUSTER_NODES", "127.0.0.1:7000"),
    ],
)
def test_every_configured_topology_needs_the_record_secret(
    monkeypatch: pytest.MonkeyPatch, topology: str, address: str, value: str
) -> None:
    monkeypatch.setenv("REDIS_TOPOLOGY", topology)
    monkeypatch.setenv(address, value)
    monkeypatch.setenv("APIKEY_CACHE_BACKEND", "tiered")
    monkeypatch.delenv("APIKEY_CACHE_HMAC_SECRET")
    with pytest.raises(ConfigError, match="APIKEY_CACHE_HMAC_SECRET must be set"):
        load_settings()


def test_the_container_receives_parsed_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_TOPOLOGY", "sentinel")
    monkeypatch.setenv("REDIS_SENTINELS", "127.0.0.1:26379,[::1]:26380")
    values = load_settings().cache_settings()
    assert values["REDIS_SENTINELS_PARSED"] == [("127.0.0.1", 26379), ("::1", 26380)]
    assert values["REDIS_CLUSTER_NODES_PARSED"] is None


@pytest.mark.parametrize(
    ("prefix", "accepted"),
    [("game:apikey:", True), ("{game}:apikey:", True), ("game}:apikey:", False), ("g{a:", False)],
)
def test_a_cluster_refuses_a_prefix_that_splits_value_and_record(
    monkeypatch: pytest.MonkeyPatch, prefix: str, accepted: bool
) -> None:
    monkeypatch.setenv("REDIS_TOPOLOGY", "cluster")
    monkeypatch.setenv("REDIS_CLUSTER_NODES", "127.0.0.1:7000")
    monkeypatch.setenv("APIKEY_CACHE_REDIS_KEY_PREFIX", prefix)
    if accepted:
        assert prefix == load_settings().APIKEY_CACHE_REDIS_KEY_PREFIX
    else:
        with pytest.raises(ConfigError, match="unmatched"):
            load_settings()
