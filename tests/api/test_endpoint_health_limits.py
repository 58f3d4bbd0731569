"""ReportEndpointHealth keeps a bounded number of reports for addresses no slot lists.

Such reports are kept on purpose (endpoints brought up before StartRollout count as ready from the
start), so they are bounded rather than refused: at most one rollout's worth of addresses per deployment,
and a day's age; past the bound the report is RESOURCE_EXHAUSTED and nothing is written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg
import grpc
import pytest

from modelplane.server.deployments.validation import MAX_UNLISTED_HEALTH_REPORTS
from modelplane.v1 import deployments_pb2 as dpb
from modelplane.v1 import deployments_pb2_grpc, registry_pb2_grpc
from modelplane.v1 import registry_pb2 as pb
from tests.support import error_info

if TYPE_CHECKING:
    from modelplane.v1.deployments_pb2_grpc import DeploymentServiceAsyncStub as DeploymentStub

TIMEOUT = 10.0
DEPLOYMENT = "deployments/chat-prod"
STABLE = "10.0.0.1:8000"


async def _deploy(channel: grpc.aio.Channel) -> None:
    reg = registry_pb2_grpc.ModelRegistryServiceStub(channel)
    await reg.CreateModel(
        pb.CreateModelRequest(model_id="chat", model=pb.Model(provider="local")), timeout=TIMEOUT
    )
    await reg.CreateModelVersion(
        pb.CreateModelVersionRequest(
            parent="models/chat",
            model_version=pb.ModelVersion(
                source_uri="local:chat",
                context_window=8192,
                max_output_tokens=1024,
                pricing=pb.TokenPricing(currency_code="USD"),
            ),
        ),
        timeout=TIMEOUT,
    )
    dep = deployments_pb2_grpc.DeploymentServiceStub(channel)
    await dep.CreateDeployment(
        dpb.CreateDeploymentRequest(
            deployment_id="chat-prod",
            deployment=dpb.Deployment(
                environment="prod",
                model="models/chat",
                traffic=dpb.TrafficTable(
                    stable=dpb.SlotTraffic(
                        model_version="models/chat/versions/1", endpoints=[dpb.Endpoint(address=STABLE)]
                    )
                ),
            ),
        ),
        timeout=TIMEOUT,
    )


async def _deploy_with_unlisted_reports(channel: grpc.aio.Channel) -> DeploymentStub:
    """The deployment, with as many reports for unlisted addresses (10.9.x.y:80) as it keeps."""
    await _deploy(channel)
    dep: DeploymentStub = deployments_pb2_grpc.DeploymentServiceStub(channel)
    for i in range(MAX_UNLISTED_HEALTH_REPORTS):
        await dep.ReportEndpointHealth(_report(f"10.9.{i // 256}.{i % 256}:80"), timeout=TIMEOUT)
    return dep


async def _stored(database_url: str) -> int:
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM endpoint_health"))
    finally:
        await conn.close()


def _report(address: str, ready: bool = True) -> dpb.ReportEndpointHealthRequest:
    return dpb.ReportEndpointHealthRequest(deployment=DEPLOYMENT, address=address, ready=ready)


async def test_reports_for_unlisted_addresses_are_bounded(
    channel: grpc.aio.Channel, database_url: str
) -> None:
    dep = await _deploy_with_unlisted_reports(channel)
    assert await _stored(database_url) == MAX_UNLISTED_HEALTH_REPORTS
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await dep.ReportEndpointHealth(_report("10.8.0.1:80"), timeout=TIMEOUT)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info = error_info(raised.value)
    assert info.reason == "TOO_MANY_UNLISTED_ENDPOINTS"
    assert info.metadata["limit"] == str(MAX_UNLISTED_HEALTH_REPORTS)
    assert await _stored(database_url) == MAX_UNLISTED_HEALTH_REPORTS
    # Addresses already kept still change, and the deployment's own endpoints always report.
    await dep.ReportEndpointHealth(_report("10.9.0.0:80", ready=False), timeout=TIMEOUT)
    response = await dep.ReportEndpointHealth(_report(STABLE, ready=False), timeout=TIMEOUT)
    assert response.changed
    assert await _stored(database_url) == MAX_UNLISTED_HEALTH_REPORTS + 1


async def test_unlisted_reports_older_than_a_day_make_room(
    channel: grpc.aio.Channel, database_url: str
) -> None:
    dep = await _deploy_with_unlisted_reports(channel)
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        await conn.execute(
            "UPDATE endpoint_health SET report_time = now() - interval '25 hours'"
            " WHERE address = '10.9.0.0:80'"
        )
    finally:
        await conn.close()
    await dep.ReportEndpointHealth(_report("10.8.0.1:80"), timeout=TIMEOUT)
    # The stale report went, the new one came: still at the bound.
    assert await _stored(database_url) == MAX_UNLISTED_HEALTH_REPORTS
