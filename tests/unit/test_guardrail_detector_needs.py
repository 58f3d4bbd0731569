"""Each PII detector's `needs` promise holds: every match of its pattern contains one of those bytes.

The scan stops looking for a detector's matches past the last of its needed bytes in the text, so a
promise that does not hold would hide findings; texts are drawn from pieces near every detector's shape.
"""

from __future__ import annotations

import re2  # type: ignore[import-untyped]  # no typing information is published
from hypothesis import given, settings
from hypothesis import strategies as st

from modelplane.server.guardrails.engine.detectors import DETECTORS

PIECES = [
    "harbour@example.org", "a.b@c.io", "x@y", "@", "+44 20 7946 0958", "(555) 123-4567", "555-123-4567",
    "4111 1111 1111 1111", "4111-1111-1111-1111", "DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432",
    "078-05-1120", "078 05 1120", "192.168.0.1", "1.2.3.4.5", "::1", "2001:db8::ff00:42:8329", "fe80::",
    "sk-abcdefghijklmnopqrstuvwxyz123456", "sk-proj-abcdefghijklmnopqrstuvwx", "AKIAIOSFODNN7EXAMPLE",
    "ASIAIOSFODNN7EXAMPLE", "ghp_0123456789abcdefghijklmnopqrstuvwxyz", "xoxb-1234567890-abc",
    "AIzaSyA-1234567890abcdefghijklmnopqrstu", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.abcdefghijkl",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIabc\n-----END RSA PRIVATE KEY-----", "akiaiosfodnn7example",
    " ", "\n", ".", "-", "_", ":", "0", "12", "a", "Z", "é", "日本", "🙂",
]  # fmt: skip


@settings(max_examples=2000, deadline=None)
@given(pieces=st.lists(st.sampled_from(PIECES), max_size=12), glue=st.sampled_from(["", " ", "-", "x", "é"]))
def test_every_match_of_a_detector_holds_one_of_its_needed_bytes(pieces: list[str], glue: str) -> None:
    encoded = glue.join(pieces).encode()
    for detector in DETECTORS:
        if not detector.needs:
            continue
        for match in re2.compile(detector.pattern.encode()).finditer(encoded):
            matched = match.group()
            assert any(bytes([needed]) in matched for needed in detector.needs), (detector.kind, matched)
