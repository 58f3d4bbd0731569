"""ServerConfig: the one loopback rule (auth off on gRPC or HTTP, the metrics endpoint) and the defaults the
CLI takes."""

from __future__ import annotations

import pytest

from modelplane.server.cli import apply_environment, build_parser, server_config
from modelplane.server.config import ConfigError, ServerConfig, is_loopback


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1:50051", True),
        ("127.8.9.10:1", True),
        ("[::1]:50051", True),
        ("localhost:9464", True),
        ("0.0.0.0:50051", False),
        ("[::]:50051", False),
        ("10.1.2.3:50051", False),
        ("example.com:50051", False),
        (":50051", False),
    ],
)
def test_is_loopback(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback


def test_auth_off_beyond_loopback_needs_insecure() -> None:
    with pytest.raises(ConfigError, match=r"refusing to listen on 0\.0\.0\.0:1 with auth off.*--insecure"):
        ServerConfig(address="0.0.0.0:1", auth=False)
    assert ServerConfig(address="0.0.0.0:1", auth=False, insecure=True).insecure
    assert ServerConfig(address="0.0.0.0:1", auth=True).auth
    assert not ServerConfig(address="[::1]:1", auth=False).auth


def test_http_with_auth_off_beyond_loopback_needs_insecure() -> None:
    # The HTTP address answers the same calls as the gRPC one, so it obeys the same rule on its own.
    with pytest.raises(
        ConfigError, match=r"refusing to listen on 0\.0\.0\.0:8080 for HTTP with auth off.*--insecure"
    ):
        ServerConfig(auth=False, http_address="0.0.0.0:8080")
    assert ServerConfig(auth=False, insecure=True, http_address="0.0.0.0:8080").http_address == "0.0.0.0:8080"
    assert ServerConfig(auth=True, http_address="0.0.0.0:8080").auth
    assert ServerConfig(auth=False, http_address="127.0.0.1:8080").http_address == "127.0.0.1:8080"


def test_the_http_address_flag_and_variable() -> None:
    args = build_parser().parse_args(["serve", "--http-address", "127.0.0.1:8080"])
    apply_environment(args, {})
    assert server_config(args).http_address == "127.0.0.1:8080"
    args = build_parser().parse_args(["serve"])
    apply_environment(args, {"MODELPLANE_HTTP_ADDRESS": "[::1]:8080"})
    assert server_config(args).http_address == "[::1]:8080"


def test_metrics_beyond_loopback_needs_metrics_insecure() -> None:
    with pytest.raises(ConfigError, match=r"0\.0\.0\.0:9464 for the metrics endpoint.*--metrics-insecure"):
        ServerConfig(metrics_address="0.0.0.0:9464")
    # --insecure speaks for auth alone; auth on does not protect the metrics endpoint either.
    with pytest.raises(ConfigError, match="--metrics-insecure"):
        ServerConfig(address="0.0.0.0:1", auth=False, insecure=True, metrics_address="0.0.0.0:9464")
    assert ServerConfig(metrics_address="0.0.0.0:9464", metrics_insecure=True).metrics_insecure
    assert ServerConfig(metrics_address="127.0.0.1:9464").metrics_address == "127.0.0.1:9464"
    assert ServerConfig(metrics_address="localhost:0").metrics_address == "localhost:0"


def test_serve_without_flags_or_variables_is_the_default_config() -> None:
    args = build_parser().parse_args(["serve"])
    apply_environment(args, {})
    assert server_config(args) == ServerConfig()


def test_a_variable_reaches_the_config() -> None:
    args = build_parser().parse_args(["serve"])
    environ = {"MODELPLANE_METRICS_ADDRESS": "0.0.0.0:9464", "MODELPLANE_METRICS_INSECURE": "1"}
    apply_environment(args, environ)
    config = server_config(args)
    assert (config.metrics_address, config.metrics_insecure) == ("0.0.0.0:9464", True)
