"""The default number of workers: one per core this process may run on, one core's worth left to an
embedded Postgres, never fewer than one; and the settings that bound workers and the access log."""

from __future__ import annotations

import os

import pytest

from modelplane.server.config import ConfigError, ServerConfig
from modelplane.server.workers import connections_per_worker, default_worker_count, worker_count


def test_one_worker_per_core_less_one_for_the_embedded_postgres() -> None:
    cores = len(os.sched_getaffinity(0))
    assert default_worker_count(embedded_postgres=False) == cores
    assert default_worker_count(embedded_postgres=True) == max(1, cores - 1)


def test_one_core_still_gets_a_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert default_worker_count(embedded_postgres=True) == 1
    assert default_worker_count(embedded_postgres=False) == 1


def test_the_configured_count_wins_over_the_default() -> None:
    assert worker_count(ServerConfig(workers=3)) == 3
    cores = len(os.sched_getaffinity(0))
    assert worker_count(ServerConfig(database_url="postgresql://db/x")) == cores
    assert worker_count(ServerConfig()) == max(1, cores - 1)


def test_a_worker_counts_both_pools_and_the_change_feed() -> None:
    assert connections_per_worker() == 10 + 8 + 1


def test_out_of_range_settings_are_refused() -> None:
    with pytest.raises(ConfigError):
        ServerConfig(workers=0)
    with pytest.raises(ConfigError):
        ServerConfig(access_log_sample=1.5)
    with pytest.raises(ConfigError):
        ServerConfig(access_log_sample=-0.1)
