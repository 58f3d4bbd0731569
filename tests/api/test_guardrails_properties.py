"""Random requests to every GuardrailService RPC get only documented statuses, with the promised details.

Requests are built from the generated descriptors, so a new RPC or field is fuzzed without a change here.
Strings are drawn by field name: policy names, rule ids, RE2 patterns (invalid ones, and ones that would
backtrack catastrophically on a backtracking engine), banned terms (empty, huge, unicode, NUL), JSON Schemas
(invalid, deep, remote references), texts up to one character over the limit, filters and page tokens;
enums take unknown numbers, timestamps and durations reach the int64 extremes. CheckStream gets random
sequences of start, chunk and end messages. Whatever comes back must be OK or a documented code with a
documented reason, never INTERNAL or UNKNOWN; every error carries ErrorInfo in the "modelplane" domain, and
every INVALID_ARGUMENT names its fields.

Hypothesis drives plain (synchronous) tests, so the module owns one event loop and one server on it and runs
each example on that loop; pytest-asyncio's per-test loops never touch the server.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from modelplane.v1 import common_pb2
from modelplane.v1 import guardrails_pb2 as pb
from modelplane.v1.guardrails_pb2_grpc import GuardrailServiceStub
from tests.support.live_server import (
    EXAMPLES,
    MAX_REQUEST_BYTES,
    LiveServer,
    Request,
    check_error,
    described,
    start_live_server,
)

# Under the names the property test calls them by: hypothesis seeds the repeatable run from the test's
# source, and other names would draw other examples.
from tests.support.live_server import request_size as _size
from tests.support.proto_strategies import (
    INT32_MAX,
    INT32_MIN,
    INT64_MAX,
    INT64_MIN,
    UNICODE,
    ProtoStrategies,
    any_text,
    ascii_text,
    filters_over,
    huge_text,
    merged,
    message_class,
    page_tokens_from,
    small_text,
)
from tests.support.rich_errors import RichError

SERVICE = pb.DESCRIPTOR.services_by_name["GuardrailService"]
METHODS: list[MethodDescriptor] = list(SERVICE.methods)

# The codes and reasons a guardrail RPC may answer with when storage is up and the caller may call it
# (README, "Errors" and "Guardrails"). A reason outside these is a contract change, not a detail.
DOCUMENTED: dict[grpc.StatusCode, frozenset[str]] = {
    grpc.StatusCode.INVALID_ARGUMENT: frozenset(
        {
            "INVALID_FIELD",
            "INVALID_FILTER",
            "INVALID_PAGE_TOKEN",
            "REQUEST_ID_REUSED",
            "INVALID_RULE",
            "FALLBACK_BREAKS_POLICY",
            "TEXT_TOO_LARGE",
        }
    ),
    grpc.StatusCode.NOT_FOUND: frozenset({"POLICY_NOT_FOUND", "POLICY_REVISION_NOT_FOUND"}),
    grpc.StatusCode.ALREADY_EXISTS: frozenset({"POLICY_ALREADY_EXISTS"}),
    grpc.StatusCode.ABORTED: frozenset({"ETAG_MISMATCH"}),
    # PromoteShadowRevision and GetShadowReport of a policy without a shadow.
    grpc.StatusCode.FAILED_PRECONDITION: frozenset({"SHADOW_NOT_SET"}),
}

MAX_TEXT_CHARS = 1_000_000


# ---------------------------------------------------------------------------------------------------------
# Values

# Seeded by the module fixture, so that random names often hit real policies.
POLICY_IDS = ["stories", "shapes", "target"]
EXISTING_NAMES = [f"policies/{policy_id}" for policy_id in POLICY_IDS]
# A policy the random requests never name (random ids are at most 21 characters or come from the lists).
QUIET_ID = "quiet-policy-for-fixed-cases-only"
QUIET = f"policies/{QUIET_ID}"
# Page tokens from real list calls at seed time; a token from one list sent to another must fail cleanly.
REAL_PAGE_TOKENS: list[str] = []

CARD = "4111 1111 1111 1111"  # passes the Luhn check

ids = st.one_of(
    st.sampled_from([*POLICY_IDS, "missing", "a", "-", "Stories", "stories-", "9lives"]),
    st.from_regex(r"\A[a-z][a-z0-9-]{0,20}\Z"),
)
policy_names = st.one_of(
    st.sampled_from([*EXISTING_NAMES, "policies/missing", "policies/", "policies/-", "policies/a/b"]),
    st.builds("policies/{}".format, ids),
    st.builds("{}/{}".format, st.sampled_from(EXISTING_NAMES), any_text),
    st.builds("models/{}".format, ids),
    any_text,
)
rule_ids = st.one_of(
    st.sampled_from(["violence", "cards", "mild", "r1", "a", "_", "-", "Upper", "x" * 63, "x" * 64, ""]),
    st.from_regex(r"\A[a-z0-9_-]{1,12}\Z"),
    small_text,
)

# RE2 expressions: ordinary ones, ones that would backtrack exponentially on a backtracking engine,
# programs too large to compile, syntax RE2 lacks (look-around, back-references), empty matches, junk.
PATTERNS = [
    r"\bkill\b",
    r"\d{3}-\d{2}-\d{4}",
    r"(?i)dragon",
    r"[\p{Greek}]+",
    r"(a+)+$",
    r"(a|aa)*b",
    r"(x+x+)+y",
    r"^(([a-z])+.)+[A-Z]([a-z])+$",
    r"(.*a){20}",
    r"((a{100}){100}){100}",
    r"a{1001}",
    r"(?:(?:(?:a{50}){50}){50})",
    r"\w{1000}\w{1000}",
    r"(?=a)a",
    r"(?<!x)y",
    r"(a)\1",
    r"a*",
    r"^",
    r"\b",
    r"|",
    r"(",
    r"[",
    r"*",
    r"a{2,1}",
    r"\p{NoSuchClass}",
    r"(?P<n>a)(?P<n>b)",
    "\x00",
    "a\x00b",
    "é+",
    "\U0001d54f",
    "x" * 4096,
    "x" * 4097,
]
patterns = st.one_of(st.sampled_from(PATTERNS), small_text, ascii_text)

terms = st.one_of(
    st.sampled_from(["kill", "stab", "", " ", "  \t", "ß", "İ", "ﬀ", "\x00", "a" * 256, "a" * 257, "\u0301"]),
    small_text,
    huge_text,
)

# JSON values for schemas and texts, and schemas that are broken in every way the compiler must notice.
json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(UNICODE, max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)
SCHEMAS = [
    "",
    "{}",
    "true",
    "false",
    "null",
    "[]",
    "1",
    '"x"',
    "{",
    "not json",
    '{"type": "object", "required": ["title"]}',
    '{"type": "nonsense"}',
    '{"type": 5}',
    '{"minLength": -1}',
    '{"pattern": "(?=a)"}',
    '{"pattern": "("}',
    '{"pattern": "(a+)+$"}',
    '{"properties": {"a": {"pattern": "\\\\d+"}}}',
    '{"patternProperties": {"^a": {}}}',
    '{"$dynamicRef": "#x"}',
    '{"$ref": "#/definitions/missing"}',
    '{"$ref": "https://example.com/schema.json"}',
    '{"$ref": "file:///etc/passwd"}',
    '{"$schema": "http://json-schema.org/draft-04/schema#", "type": "object"}',
    '{"$schema": "https://example.com/unknown-draft"}',
    '{"format": "regex"}',
    '{"enum": []}',
    '{"allOf": [{"$ref": "#"}]}',
    '{"a": NaN}',
    '{"a": Infinity}',
    "[" * 5000 + "]" * 5000,
    '{"items": ' * 900 + "{}" + "}" * 900,
    '{"not": ' * 2000 + "{}" + "}" * 2000,
    "{" + '"a": 1, ' * 20_000 + '"b": 2}',
]
schemas = st.one_of(
    st.sampled_from(SCHEMAS),
    json_values.map(json.dumps),
    small_text,
)

# Texts: what the seeded rules look for, JSON, near-limit and over-limit sizes.
texts = st.one_of(
    st.sampled_from(
        [
            "",
            "And then the knight will kill the dragon.",
            f"Pay with {CARD} today.",
            "mail me: someone@example.com, or call +1 415 555 0100",
            "DE89 3704 0044 0532 0130 00",
            "ssn 123-45-6789 ip 10.0.0.1 key AKIAIOSFODNN7EXAMPLE",
            '{"title": "x"}',
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!",
            "darn heck maybe",
            "KILL Kill kİll",
        ]
    ),
    st.builds(lambda char, count: char * count, st.sampled_from("a \n\x00é"), st.integers(16_000, 17_000)),
    st.sampled_from([MAX_TEXT_CHARS, MAX_TEXT_CHARS + 1]).map(lambda n: "a" * n),
    st.builds(lambda count: "kill " * count, st.integers(1, 3000)),
    json_values.map(json.dumps),
    any_text,
)

FILTER_FIELDS = [
    "policy",
    "policy_revision",
    "rule_id",
    "severity",
    "decision",
    "category",
    "model_version",
    "deployment",
    "traffic_slot",
    "trace_id",
    "create_time",
    "update_time",
    "name",
    "display_name",
    "description",
    "labels.team",
    "unknown",
    "",
]
FILTER_VALUES = [
    '"policies/stories"',
    "policies/stories",
    '"policies/*"',
    "ERROR",
    "error",
    "SEVERITY_CRITICAL",
    "BLOCK",
    "DECISION_REDACT",
    "CANARY",
    "TRAFFIC_SLOT_STABLE",
    "UNSPECIFIED",
    "bogus",
    "*",
    "42",
    "-1",
    "0",
    str(INT64_MAX),
    str(2**63),
    str(-(2**63) - 1),
    '"2025-01-01T00:00:00Z"',
    '"2025-13-40T99:00:00Z"',
    '"not a time"',
    '"models/chat/versions/1"',
    '"0af7651916cd43dd8448eb211c80319c"',
    '"unterminated',
    "AND",
    "NOT",
    '""',
    "()",
]
filters = filters_over(
    FILTER_FIELDS,
    FILTER_VALUES,
    nested="severity = ERROR",
    malformed=["", "(", ")", "AND", "NOT", "a =", "= b", "x" * 2001, "(" * 5000],
)
page_tokens = page_tokens_from(REAL_PAGE_TOKENS)
request_ids = st.one_of(
    st.just(""), st.uuids().map(str), st.sampled_from(["repeat-1", "repeat-2", "r" * 129]), any_text
)

# String fields by name: the values that reach deep into the service, mixed with anything at all.
TEXT_BY_FIELD: dict[str, st.SearchStrategy[str]] = {
    "name": policy_names,
    "policy": policy_names,
    "policy_id": st.one_of(ids, any_text),
    "id": rule_ids,
    "rule_id": rule_ids,
    "category": rule_ids,
    "pattern": patterns,
    "terms": terms,
    "schema": schemas,
    "text": texts,
    "chunk": texts,
    "filter": filters,
    "page_token": page_tokens,
    "request_id": request_ids,
    "etag": st.one_of(st.sampled_from(["", '"1"', "W/x", "0" * 16]), any_text),
    "model_version": st.one_of(
        st.sampled_from(["models/chat/versions/1", "models/chat/versions/0", "models/chat", ""]), any_text
    ),
    "deployment": st.one_of(st.sampled_from(["deployments/web", "deployments/", "web"]), any_text),
    "trace_id": st.one_of(
        st.sampled_from(["0af7651916cd43dd8448eb211c80319c", "0AF7651916CD43DD8448EB211C80319C"]),
        st.text("0123456789abcdefg", max_size=34),
    ),
    "default_fallback": st.one_of(st.sampled_from(["Not available.", "kill", "x" * 10_001]), any_text),
}


# Durations and timestamps as the wire allows them (any int64 seconds, any int32 nanos), not only as the
# well-known types' rules allow them.
TIMESTAMP_SECONDS = st.one_of(
    st.sampled_from([0, 1, -1, 1_700_000_000, 253_402_300_799, 253_402_300_800, -62_135_596_800]),
    st.sampled_from([-62_135_596_801, INT64_MAX, INT64_MIN]),
    st.integers(INT64_MIN, INT64_MAX),
    st.integers(0, 4_000_000_000),
)
NANOS = st.one_of(st.sampled_from([0, 1, 999_999_999, 1_000_000_000, -1, 500_000_000]), st.integers())
timestamps = st.builds(
    lambda seconds, nanos: timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos),
    TIMESTAMP_SECONDS,
    NANOS.filter(lambda n: INT32_MIN <= n <= INT32_MAX),
)
durations = st.builds(
    lambda seconds, nanos: duration_pb2.Duration(seconds=seconds, nanos=nanos),
    st.one_of(
        st.sampled_from([0, 1, -1, 60, 61, 3600, 31 * 24 * 3600, 31 * 24 * 3600 + 1, INT64_MAX, INT64_MIN]),
        st.integers(INT64_MIN, INT64_MAX),
    ),
    st.one_of(st.sampled_from([0, 1_000_000, 500_000_000, 1, -1_000_000]), st.integers(INT32_MIN, INT32_MAX)),
)
WELL_KNOWN: dict[str, st.SearchStrategy[Message]] = {
    timestamp_pb2.Timestamp.DESCRIPTOR.full_name: timestamps,
    duration_pb2.Duration.DESCRIPTOR.full_name: durations,
}

# The keys of fallback_content: rule categories.
fallback_keys = st.one_of(st.sampled_from(["violence", "pii", "Violence", "", "x" * 64]), small_text)

proto = ProtoStrategies(
    text_by_field=TEXT_BY_FIELD,
    int_edges=(0, 1, -1, 2, 50, 999, 1000, 1001, 60_000),
    near_zero_max=100,
    map_keys=fallback_keys,
    mask_paths=["*", "", "name", "etag", "revision", "rules.id", "decisions.info", "x.y", "*.*"],
    well_known=WELL_KNOWN,
)


# ---------------------------------------------------------------------------------------------------------
# Valid requests, and rules that get past field validation into the compiler

severities = st.sampled_from([pb.SEVERITY_INFO, pb.SEVERITY_WARNING, pb.SEVERITY_ERROR, pb.SEVERITY_CRITICAL])
rule_kinds: st.SearchStrategy[dict[str, Message]] = st.one_of(
    st.builds(
        lambda t, cs, inside: {
            "banned_terms": pb.BannedTermsRule(terms=t, case_sensitive=cs, match_inside_words=inside)
        },
        st.lists(terms, max_size=4),
        st.booleans(),
        st.booleans(),
    ),
    st.builds(lambda p, ci: {"regex": pb.RegexRule(pattern=p, case_insensitive=ci)}, patterns, st.booleans()),
    st.builds(
        lambda kinds: {"pii": pb.PiiRule(kinds=kinds)},
        st.lists(st.one_of(st.integers(0, 8), st.integers(INT32_MIN, INT32_MAX)), max_size=4),
    ),
    st.builds(
        lambda low, high: {"length": pb.LengthRule(min_chars=low, max_chars=high)},
        proto.integers(INT64_MIN, INT64_MAX),
        proto.integers(INT64_MIN, INT64_MAX),
    ),
    st.builds(lambda s: {"json": pb.JsonRule(schema=s)}, schemas),
    st.builds(lambda p: {"required_pattern": pb.RequiredPatternRule(pattern=p)}, patterns),
)


def _rule(index: int, severity: int, kind: dict[str, Message]) -> pb.Rule:
    return pb.Rule(id=f"r{index}", severity=severity, category=f"c{index % 2}", **kind)  # type: ignore[arg-type]


compilable_rules = st.lists(st.tuples(severities, rule_kinds), min_size=1, max_size=3).map(
    lambda drawn: [_rule(i, severity, kind) for i, (severity, kind) in enumerate(drawn)]
)


def _policy(rules: Sequence[pb.Rule], **fields: Any) -> pb.Policy:
    return pb.Policy(rules=rules, **{"fail_mode": pb.FAIL_MODE_CLOSED, **fields})


def story_policy() -> pb.Policy:
    return _policy(
        [
            pb.Rule(
                id="mild",
                severity=pb.SEVERITY_WARNING,
                category="language",
                banned_terms=pb.BannedTermsRule(terms=["darn", "heck"]),
            ),
            pb.Rule(
                id="cards",
                severity=pb.SEVERITY_ERROR,
                category="pii",
                pii=pb.PiiRule(kinds=[pb.PII_KIND_PAYMENT_CARD, pb.PII_KIND_EMAIL]),
            ),
            pb.Rule(
                id="violence",
                severity=pb.SEVERITY_CRITICAL,
                category="violence",
                banned_terms=pb.BannedTermsRule(terms=["kill", "stab"]),
            ),
            pb.Rule(
                id="hedging",
                severity=pb.SEVERITY_INFO,
                category="style",
                regex=pb.RegexRule(pattern=r"\bmaybe\b", case_insensitive=True),
            ),
        ],
        display_name="Stories",
        fallback_content={"violence": "The knight and the dragon became friends."},
        default_fallback="This story is not available.",
    )


def shapes_policy() -> pb.Policy:
    return _policy(
        [
            pb.Rule(
                id="shape",
                severity=pb.SEVERITY_ERROR,
                category="format",
                json=pb.JsonRule(schema='{"type": "object", "required": ["title"]}'),
            ),
            pb.Rule(
                id="size",
                severity=pb.SEVERITY_WARNING,
                category="format",
                length=pb.LengthRule(max_chars=5000),
            ),
            pb.Rule(
                id="disclaimer",
                severity=pb.SEVERITY_INFO,
                category="style",
                required_pattern=pb.RequiredPatternRule(pattern="fiction"),
            ),
        ],
        fail_mode=pb.FAIL_MODE_OPEN,
    )


links = st.builds(
    common_pb2.EventLinks,
    model_version=st.sampled_from(["", "models/chat/versions/1"]),
    deployment=st.sampled_from(["", "deployments/web"]),
    traffic_slot=st.sampled_from([common_pb2.TRAFFIC_SLOT_UNSPECIFIED, common_pb2.TRAFFIC_SLOT_CANARY]),
    trace_id=st.sampled_from(["", "0af7651916cd43dd8448eb211c80319c"]),
)

# A valid request of each RPC against the seeded policies. Most fully random requests fail validation on
# their first field, so half of the examples start from one of these and change at most two fields (at
# each nesting level), which takes them past validation into the compiler, the checks and the store.
VALID_REQUESTS: dict[str, st.SearchStrategy[Message]] = {
    "CreatePolicy": st.builds(
        lambda policy_id, rules, fallback: pb.CreatePolicyRequest(
            policy_id=policy_id, policy=_policy(rules, default_fallback=fallback)
        ),
        st.from_regex(r"\A[a-z][a-z0-9-]{0,20}\Z"),
        compilable_rules,
        st.sampled_from(["", "Not available.", "kill", CARD]),
    ),
    "GetPolicy": st.builds(
        lambda name, revision: pb.GetPolicyRequest(name=name, revision=revision),
        st.sampled_from(EXISTING_NAMES),
        st.integers(0, 3),
    ),
    "ListPolicies": st.just(pb.ListPoliciesRequest(page_size=1, filter='display_name = "Stories"')),
    "UpdatePolicy": st.builds(
        lambda rules, paths: pb.UpdatePolicyRequest(
            policy=_policy(rules, name="policies/target", display_name="Target"),
            update_mask=field_mask_pb2.FieldMask(paths=paths),
        ),
        compilable_rules,
        st.sampled_from([["rules"], ["*"], ["rules", "display_name"], ["decisions"]]),
    ),
    "DeletePolicy": st.builds(
        lambda policy_id: pb.DeletePolicyRequest(name=f"policies/{policy_id}"),
        st.from_regex(r"\A[a-z][a-z0-9-]{0,20}\Z"),
    ),
    "ListPolicyRevisions": st.just(pb.ListPolicyRevisionsRequest(name="policies/stories", page_size=1)),
    "CheckContent": st.builds(
        lambda name, text, event_links: pb.CheckContentRequest(policy=name, text=text, links=event_links),
        st.sampled_from(EXISTING_NAMES),
        texts,
        links,
    ),
    "ListViolations": st.builds(
        lambda filter_text: pb.ListViolationsRequest(page_size=2, filter=filter_text),
        st.sampled_from(
            [
                "",
                "(severity = ERROR OR severity = CRITICAL) AND traffic_slot = CANARY",
                'policy = "policies/stories" rule_id = "violence"',
                'create_time >= "2020-01-01T00:00:00Z" decision != ALLOW',
            ]
        ),
    ),
    "AggregateViolations": st.builds(
        lambda groups, width, policy: pb.AggregateViolationsRequest(
            group_by=groups, bucket_width=duration_pb2.Duration(seconds=width), policy=policy
        ),
        st.lists(st.sampled_from(range(1, 8)), unique=True, max_size=3),
        st.sampled_from([1, 60, 3600, 86_400, 31 * 86_400]),
        st.sampled_from(["", "policies/stories"]),
    ),
}


def _start(policy: str, revision: int = 0, request_id: str = "") -> pb.CheckStreamRequest:
    return pb.CheckStreamRequest(
        start=pb.CheckStreamStart(policy=policy, policy_revision=revision, request_id=request_id)
    )


END = pb.CheckStreamRequest(end=pb.CheckStreamEnd())
stream_requests = proto.messages(pb.CheckStreamRequest.DESCRIPTOR)
chunks = texts.map(lambda text: pb.CheckStreamRequest(chunk=text))


def _stream(start: pb.CheckStreamRequest, body: list[pb.CheckStreamRequest], end: bool) -> list[Message]:
    return [start, *body, *([END] if end else [])]


# A CheckStream as a list of its requests: well-formed streams over random chunks, the same with a random
# message slipped in or the end left out, and lists of anything at all.
check_streams: st.SearchStrategy[list[Message]] = st.one_of(
    st.builds(
        _stream,
        st.builds(_start, st.sampled_from(EXISTING_NAMES), st.sampled_from([0, 1, 2, 99])),
        st.lists(chunks, max_size=5),
        st.just(True),
    ),
    st.builds(
        _stream,
        st.one_of(
            st.builds(_start, policy_names, st.sampled_from([0, 1, -1, INT64_MAX]), request_ids),
            stream_requests,
        ),
        st.lists(st.one_of(chunks, stream_requests), max_size=5),
        st.booleans(),
    ),
    st.lists(stream_requests, max_size=4),
)


@functools.cache
def requests_of(method: MethodDescriptor) -> st.SearchStrategy[Message | Sequence[Message]]:
    """Fully random requests, and valid ones with a few fields changed to random values."""

    def define() -> st.SearchStrategy[Message | Sequence[Message]]:
        if method.client_streaming:
            return check_streams
        base = VALID_REQUESTS.get(method.name, st.just(message_class(method.input_type)()))
        near_valid = st.builds(merged, base, proto.messages(method.input_type, sparse=True))
        return st.one_of(proto.messages(method.input_type), near_valid, base)

    return st.deferred(define)


# ---------------------------------------------------------------------------------------------------------
# The server


def _aggregate(**fields: Any) -> pb.AggregateViolationsRequest:
    """An AggregateViolationsRequest from plain values, enum numbers the contract may not know included."""
    return pb.AggregateViolationsRequest(**fields)


async def _seed(channel: grpc.aio.Channel) -> list[str]:
    """The policies of EXISTING_NAMES with a few revisions and records, and page tokens from each list."""
    stub = GuardrailServiceStub(channel)
    await stub.CreatePolicy(pb.CreatePolicyRequest(policy_id="stories", policy=story_policy()))
    await stub.CreatePolicy(pb.CreatePolicyRequest(policy_id="shapes", policy=shapes_policy()))
    await stub.CreatePolicy(pb.CreatePolicyRequest(policy_id="target", policy=shapes_policy()))
    await stub.CreatePolicy(pb.CreatePolicyRequest(policy_id=QUIET_ID, policy=story_policy()))
    await stub.UpdatePolicy(
        pb.UpdatePolicyRequest(
            policy=pb.Policy(name="policies/stories", display_name="Stories"),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        )
    )
    for text in ("And then the knight will kill the dragon.", f"Pay with {CARD}.", "darn it"):
        await stub.CheckContent(
            pb.CheckContentRequest(
                policy="policies/stories",
                text=text,
                links=common_pb2.EventLinks(
                    model_version="models/chat/versions/1", traffic_slot=common_pb2.TRAFFIC_SLOT_CANARY
                ),
            )
        )
    tokens = [
        (await stub.ListPolicies(pb.ListPoliciesRequest(page_size=1))).next_page_token,
        (
            await stub.ListPolicyRevisions(
                pb.ListPolicyRevisionsRequest(name="policies/stories", page_size=1)
            )
        ).next_page_token,
        (await stub.ListViolations(pb.ListViolationsRequest(page_size=1))).next_page_token,
        (
            await stub.ListViolations(pb.ListViolationsRequest(page_size=1, filter="severity != INFO"))
        ).next_page_token,
    ]
    assert all(tokens), tokens
    return tokens


@pytest.fixture(scope="module")
def live(admin_url: str, template_database: str) -> Iterator[LiveServer]:
    """One seeded server for the module on a loop of its own, so that hypothesis examples can share it."""
    with start_live_server(admin_url, template_database, SERVICE, check_outcome) as server:
        REAL_PAGE_TOKENS[:] = server.run(_seed(server.channel))
        yield server


# ---------------------------------------------------------------------------------------------------------
# The property


def check_outcome(
    method: MethodDescriptor, request: Request, error: RichError | None, responses: list[Message]
) -> None:
    where = described(method, request)
    if error is None:
        if method.server_streaming:
            # A stream that ends OK has always closed with its final verdict.
            assert responses, f"no response from {where}"
            last = responses[-1]
            assert isinstance(last, pb.CheckStreamResponse)
            assert last.WhichOneof("event") == "verdict", f"no final verdict: {where}"
            assert last.verdict.final, f"the last verdict is not final: {where}"
        return
    check_error(error, where, DOCUMENTED)


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
@given(data=st.data())
def test_only_documented_statuses(live: LiveServer, method: MethodDescriptor, data: st.DataObject) -> None:
    request = data.draw(requests_of(method), label="request")
    assume(_size(request) < MAX_REQUEST_BYTES)
    error, responses = live.run(live.call(method, request))
    # Shown by --hypothesis-show-statistics: how deep the random requests get.
    event("OK" if error is None else f"{error.code.name} {error.reason}")
    check_outcome(method, request, error, responses)


def test_the_seeded_tokens_are_real(live: LiveServer) -> None:
    # The fuzzer mixes these in; they must be tokens the server itself made.
    assert len(REAL_PAGE_TOKENS) == 4
    error, _ = live.run(
        live.call(
            SERVICE.methods_by_name["ListPolicies"], pb.ListPoliciesRequest(page_token=REAL_PAGE_TOKENS[0])
        )
    )
    assert error is None


# ---------------------------------------------------------------------------------------------------------
# Fixed cases: each documented edge once, with the code, reason and path it must get


def _create_quiet(rule: pb.Rule, **fields: Any) -> pb.CreatePolicyRequest:
    return pb.CreatePolicyRequest(
        policy_id=f"fixed-{uuid.uuid4().hex[:12]}", policy=_policy([rule], **fields)
    )


def _regex_rule(pattern: str) -> pb.Rule:
    return pb.Rule(id="r", severity=pb.SEVERITY_ERROR, category="c", regex=pb.RegexRule(pattern=pattern))


def _pii(*kinds: int) -> pb.PiiRule:
    rule = pb.PiiRule()
    rule.kinds.extend(kinds)  # type: ignore[arg-type]  # unknown numbers on purpose
    return rule


def _json_rule(schema: str) -> pb.Rule:
    return pb.Rule(id="r", severity=pb.SEVERITY_ERROR, category="c", json=pb.JsonRule(schema=schema))


def _terms_rule(*words: str) -> pb.Rule:
    return pb.Rule(
        id="r", severity=pb.SEVERITY_ERROR, category="c", banned_terms=pb.BannedTermsRule(terms=list(words))
    )


INVALID_RULE_CASES = [
    pytest.param(_regex_rule("(?=a)a"), "policy.rules[0].regex.pattern", id="lookahead"),
    pytest.param(_regex_rule(r"(a)\1"), "policy.rules[0].regex.pattern", id="backreference"),
    pytest.param(
        _regex_rule("((a{100}){100}){100}"), "policy.rules[0].regex.pattern", id="program-too-large"
    ),
    pytest.param(_regex_rule("x" * 4097), "policy.rules[0].regex.pattern", id="pattern-too-long"),
    pytest.param(_regex_rule("a*"), "policy.rules[0].regex.pattern", id="matches-empty"),
    pytest.param(_regex_rule("("), "policy.rules[0].regex.pattern", id="unbalanced"),
    pytest.param(
        pb.Rule(
            id="r",
            severity=pb.SEVERITY_ERROR,
            category="c",
            required_pattern=pb.RequiredPatternRule(pattern="["),
        ),
        "policy.rules[0].required_pattern.pattern",
        id="required-unbalanced",
    ),
    pytest.param(_json_rule("{"), "policy.rules[0].json.schema", id="schema-not-json"),
    pytest.param(_json_rule('{"type": "nonsense"}'), "policy.rules[0].json.schema", id="schema-invalid"),
    pytest.param(
        _json_rule('{"pattern": "(?=a)"}'), "policy.rules[0].json.schema.pattern", id="schema-pattern-not-re2"
    ),
    pytest.param(_json_rule("[1]"), "policy.rules[0].json.schema", id="schema-not-an-object"),
    pytest.param(_json_rule("x" * 65_537), "policy.rules[0].json.schema", id="schema-too-long"),
]


@pytest.mark.parametrize(("rule", "path"), INVALID_RULE_CASES)
def test_a_rule_that_does_not_compile_is_named(live: LiveServer, rule: pb.Rule, path: str) -> None:
    error, _ = live.expect("CreatePolicy", _create_quiet(rule))
    assert error is not None
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_RULE"), error
    assert path in error.field_paths, error.field_paths


@pytest.mark.parametrize(
    ("rule", "path"),
    [
        pytest.param(_terms_rule(""), "policy.rules[0].banned_terms.terms[0]", id="empty-term"),
        pytest.param(_terms_rule("ok", "  "), "policy.rules[0].banned_terms.terms[1]", id="blank-term"),
        pytest.param(_terms_rule("a" * 257), "policy.rules[0].banned_terms.terms[0]", id="huge-term"),
        pytest.param(_terms_rule(), "policy.rules[0].banned_terms.terms", id="no-terms"),
    ],
)
def test_a_bad_term_is_refused_by_path(live: LiveServer, rule: pb.Rule, path: str) -> None:
    error, _ = live.expect("CreatePolicy", _create_quiet(rule))
    assert error is not None
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT, error
    assert path in error.field_paths, error.field_paths


@pytest.mark.parametrize("number", [0, 8, 99, -1, INT32_MAX])
def test_an_unknown_pii_kind_is_refused_by_path(live: LiveServer, number: int) -> None:
    rule = pb.Rule(id="r", severity=pb.SEVERITY_ERROR, category="c", pii=_pii(1, number))
    error, _ = live.expect("CreatePolicy", _create_quiet(rule))
    assert error is not None
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT, error
    assert "policy.rules[0].pii.kinds[1]" in error.field_paths, error.field_paths


@pytest.mark.parametrize(
    "pattern",
    ["(a+)+$", "(a|aa)*b", "(x+x+)+y", "(.*a){20}"],
    ids=["nested", "alternation", "pairs", "dotstar"],
)
def test_a_catastrophic_pattern_checks_in_linear_time(live: LiveServer, pattern: str) -> None:
    # On a backtracking engine each of these takes centuries on this text; RE2 answers within the budget.
    error, _ = live.expect("CreatePolicy", request := _create_quiet(_regex_rule(pattern)))
    if error is not None:
        # A program too large for the limit is a documented refusal, not a stall.
        assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_RULE"), error
        return
    text = "a" * 30_000 + "x" * 30_000 + "!"
    error, responses = live.expect(
        "CheckContent", pb.CheckContentRequest(policy=f"policies/{request.policy_id}", text=text)
    )
    assert error is None, error
    verdict = responses[0].verdict  # type: ignore[attr-defined]
    assert not verdict.unchecked, "a linear-time expression ran out of its budget"


def test_a_text_at_the_limit_is_checked(live: LiveServer) -> None:
    error, responses = live.expect(
        "CheckContent", pb.CheckContentRequest(policy=QUIET, text="a" * MAX_TEXT_CHARS)
    )
    assert error is None, error
    assert responses[0].verdict.final  # type: ignore[attr-defined]


@pytest.mark.parametrize("char", ["a", "é"], ids=["ascii", "two-byte"])
def test_a_text_over_the_limit_is_too_large(live: LiveServer, char: str) -> None:
    error, _ = live.expect(
        "CheckContent", pb.CheckContentRequest(policy=QUIET, text=char * (MAX_TEXT_CHARS + 1))
    )
    assert error is not None
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "TEXT_TOO_LARGE"), error
    assert error.field_paths == ["text"]


def test_a_stream_over_the_limit_is_too_large(live: LiveServer) -> None:
    half = "a" * (MAX_TEXT_CHARS // 2)
    request = [_start(QUIET), pb.CheckStreamRequest(chunk=half), pb.CheckStreamRequest(chunk=half + "a"), END]
    error, _ = live.expect("CheckStream", request)
    assert error is not None
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "TEXT_TOO_LARGE"), error
    assert error.field_paths == ["chunk"]


@pytest.mark.parametrize(
    ("request_", "path"),
    [
        pytest.param([pb.CheckStreamRequest(chunk="no start"), END], "start", id="no-start"),
        pytest.param([_start(QUIET), _start(QUIET), END], "start", id="two-starts"),
        pytest.param([_start(QUIET), pb.CheckStreamRequest(chunk="x")], "end", id="no-end"),
        pytest.param([_start(QUIET), pb.CheckStreamRequest(), END], "event", id="empty-message"),
        pytest.param([], "start", id="nothing"),
        pytest.param([_start("policies/Bad")], "start.policy", id="bad-policy"),
        pytest.param([_start(QUIET, revision=-1)], "start.policy_revision", id="negative-revision"),
    ],
)
def test_a_stream_out_of_order_is_refused_by_path(
    live: LiveServer, request_: Sequence[Message], path: str
) -> None:
    error, _ = live.expect("CheckStream", request_)
    assert error is not None
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT, error
    assert path in error.field_paths, error.field_paths


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(
            [_start(QUIET), pb.CheckStreamRequest(chunk="the knight will kill\x00 the dragon"), END],
            id="chunk",
        ),
        pytest.param(
            [_start(QUIET, request_id="a\x00b"), pb.CheckStreamRequest(chunk="kill"), END],
            id="start.request_id",
        ),
    ],
)
def test_a_nul_character_in_a_stream_never_ends_internal(
    live: LiveServer, request_: Sequence[Message]
) -> None:
    # The interceptor checks every message of a client stream too, before the records reach Postgres.
    error, _ = live.expect("CheckStream", request_)
    assert error is None or error.code == grpc.StatusCode.INVALID_ARGUMENT, error


@pytest.mark.parametrize(
    ("request_", "path"),
    [
        pytest.param(_aggregate(group_by=[0]), "group_by[0]", id="unspecified-group"),
        pytest.param(_aggregate(group_by=[99]), "group_by[0]", id="unknown-group"),
        pytest.param(_aggregate(group_by=[1, 1]), "group_by[1]", id="duplicate-group"),
        pytest.param(_aggregate(group_by=[7]), "bucket_width", id="bucket-missing"),
        pytest.param(
            _aggregate(group_by=[7], bucket_width=duration_pb2.Duration(seconds=31 * 86_400 + 1)),
            "bucket_width",
            id="bucket-too-wide",
        ),
        pytest.param(
            pb.AggregateViolationsRequest(bucket_width=duration_pb2.Duration(seconds=1, nanos=1)),
            "bucket_width",
            id="bucket-fraction",
        ),
        pytest.param(
            pb.AggregateViolationsRequest(
                start_time=timestamp_pb2.Timestamp(seconds=100), end_time=timestamp_pb2.Timestamp(seconds=50)
            ),
            "end_time",
            id="range-backwards",
        ),
        pytest.param(pb.AggregateViolationsRequest(policy="stories"), "policy", id="policy-not-a-name"),
    ],
)
def test_a_bad_aggregation_is_refused_by_path(
    live: LiveServer, request_: pb.AggregateViolationsRequest, path: str
) -> None:
    error, _ = live.expect("AggregateViolations", request_)
    assert error is not None
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT, error
    assert path in error.field_paths, error.field_paths


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(253_402_300_800, 0), (INT64_MAX, 0), (-62_135_596_801, 0), (INT64_MIN, 0), (0, -1), (0, 1_000_000_000)],
    ids=["year-10000", "max", "year-0", "min", "nanos-negative", "nanos-too-big"],
)
@pytest.mark.parametrize("field", ["start_time", "end_time"])
def test_a_timestamp_out_of_range_is_refused_by_path(
    live: LiveServer, field: str, seconds: int, nanos: int
) -> None:
    request = _aggregate(**{field: timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)})
    error, _ = live.expect("AggregateViolations", request)
    assert error is not None
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT, error
    assert field in error.field_paths, error.field_paths


@pytest.mark.parametrize(
    "revision",
    [
        pytest.param(INT32_MAX, id="int32-max"),
        pytest.param(INT32_MAX + 1, id="over-int32"),
        pytest.param(INT64_MAX, id="int64-max"),
    ],
)
def test_a_huge_revision_is_not_found(live: LiveServer, revision: int) -> None:
    error, _ = live.expect("GetPolicy", pb.GetPolicyRequest(name=QUIET, revision=revision))
    assert error is not None
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "POLICY_REVISION_NOT_FOUND"), error
