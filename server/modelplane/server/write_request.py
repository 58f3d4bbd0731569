"""The WriteRequest of a mutating call, made by every servicer: who writes, and its idempotency key."""

from __future__ import annotations

import hashlib

from google.protobuf.message import Message

from modelplane.server.context import caller
from modelplane.server.store.mutations import WriteRequest


def write_request(request: Message, method: str) -> WriteRequest:
    """Who writes, and the request id with a digest of the rest of the request (AIP-155)."""
    request_id = str(getattr(request, "request_id", ""))
    fingerprint = b""
    if request_id:
        copy = type(request)()
        copy.CopyFrom(request)
        copy.ClearField("request_id")
        fingerprint = hashlib.sha256(copy.SerializeToString(deterministic=True)).digest()
    return WriteRequest(actor=caller().actor, method=method, request_id=request_id, fingerprint=fingerprint)
