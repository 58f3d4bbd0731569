"""The registry's stored vocabulary (domain) and the contract's enums name the same values."""

from __future__ import annotations

from modelplane.server.registry.domain import CAPABILITIES, VersionState
from modelplane.server.registry.search import CAPABILITY_FILTER_VALUES, VERSION_STATE_FILTER_VALUES
from modelplane.v1 import registry_pb2


def _contract_names(prefix: str, names: list[str]) -> set[str]:
    return {name.removeprefix(prefix) for name in names} - {"UNSPECIFIED"}


def test_every_capability_of_the_contract_is_stored_and_filtered_by_its_name() -> None:
    contract = _contract_names("CAPABILITY_", list(registry_pb2.Capability.keys()))
    assert {c.upper() for c in CAPABILITIES} == contract
    assert set(CAPABILITY_FILTER_VALUES) == contract
    assert all(stored == name.lower() for name, stored in CAPABILITY_FILTER_VALUES.items())


def test_every_version_state_of_the_contract_is_stored_and_filtered_by_its_name() -> None:
    contract = _contract_names("MODEL_VERSION_STATE_", list(registry_pb2.ModelVersionState.keys()))
    assert {state.name for state in VersionState} == contract
    assert {state.name: state.value for state in VersionState} == VERSION_STATE_FILTER_VALUES
