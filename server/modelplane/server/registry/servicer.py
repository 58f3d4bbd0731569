"""ModelRegistryService over gRPC: converts requests, awaits the registry service, converts results."""

from __future__ import annotations

from modelplane.server.registry.service import RegistryService
from modelplane.v1 import registry_pb2_grpc


class ModelRegistryServicer(registry_pb2_grpc.ModelRegistryServiceServicer):
    def __init__(self, service: RegistryService) -> None:
        self._service = service
