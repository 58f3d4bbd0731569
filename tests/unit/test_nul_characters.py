"""Every text field of a request is checked for the NUL character, which Postgres cannot store."""

from __future__ import annotations

import pytest

from modelplane.server.errors import InvalidArgument, shown
from modelplane.server.nul_characters import refuse_nul_characters
from modelplane.v1 import registry_pb2 as pb


def paths(request: object) -> list[str]:
    with pytest.raises(InvalidArgument) as info:
        refuse_nul_characters(request)
    return [v.field for v in info.value.violations]


def test_clean_requests_pass() -> None:
    refuse_nul_characters(
        pb.CreateModelRequest(model_id="chat", model=pb.Model(provider="openai", labels={"a": "b"}))
    )
    refuse_nul_characters(b"raw bytes of a generic handler")


def test_every_kind_of_text_field_is_named_by_its_path() -> None:
    assert paths(pb.GetModelRequest(name="models/\x00")) == ["name"]
    assert paths(pb.CreateModelRequest(model_id="x", model=pb.Model(provider="p\x00"))) == ["model.provider"]
    assert paths(pb.CreateModelRequest(model=pb.Model(labels={"team": "a\x00b"}))) == ["model.labels['team']"]
    assert paths(pb.CreateModelRequest(model=pb.Model(labels={"t\x00": "v"}))) == ["model.labels"]
    lineage = pb.ModelVersion(lineage=pb.Lineage(source_run="\x00"))
    assert paths(pb.CreateModelVersionRequest(model_version=lineage)) == ["model_version.lineage.source_run"]
    both = pb.CreateModelRequest(model_id="\x00", model=pb.Model(description="\x00"))
    assert paths(both) == ["model_id", "model.description"]


def test_error_messages_quote_inputs_briefly() -> None:
    assert shown("short") == "'short'"
    long = shown("x" * 10_000)
    assert len(long) < 120
    assert "10000 characters" in long
