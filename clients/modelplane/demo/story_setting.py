"""What every process of the demo agrees on: the names of the model, deployment and policy, the releases
the story registers (their source, prices and how often their answers break the policy), the policy itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelplane.demo.story_provider import BANNED_TERM
from modelplane.v1 import guardrails_pb2, registry_pb2

MODEL_ID = "storyteller"
MODEL = f"models/{MODEL_ID}"
DEPLOYMENT_ID = "stories-prod"
DEPLOYMENT = f"deployments/{DEPLOYMENT_ID}"
ENVIRONMENT = "prod"
# Creating the deployment points the environment's alias at the stable version; success moves it.
PROD_ALIAS = f"{MODEL}/aliases/{ENVIRONMENT}"
# The release pipeline points this alias at the version it is about to canary; the model endpoints of the
# canary slot serve what it names.
CANARY_ALIAS = f"{MODEL}/aliases/canary"
POLICY_ID = "kids-stories"
POLICY = f"policies/{POLICY_ID}"
POLICY_FALLBACK = "Once upon a time, everyone in the village helped each other."


@dataclass(frozen=True)
class Release:
    """One model version the story registers: its source, its prices, and the share of its answers that
    break the policy (the demo model's mischief; see story_provider)."""

    source_uri: str
    description: str
    mischief: float
    # Micro-USD per million tokens: 1 USD in, 4 USD out unless told otherwise.
    input_micros_per_million: int = 1_000_000
    output_micros_per_million: int = 4_000_000

    @property
    def provider_model(self) -> str:
        return self.source_uri.partition(":")[2]

    @property
    def pricing(self) -> registry_pb2.TokenPricing:
        return registry_pb2.TokenPricing(
            currency_code="USD",
            input_micros_per_million=self.input_micros_per_million,
            output_micros_per_million=self.output_micros_per_million,
        )


STABLE_RELEASE = Release("local:tale-1", "the release in production", mischief=0.02)
GOOD_RELEASE = Release("local:tale-2", "a canary as well-behaved as stable", mischief=0.02)
WILD_RELEASE = Release("local:tale-3", "a canary whose stories break the policy", mischief=0.4)
RELEASES = (STABLE_RELEASE, GOOD_RELEASE, WILD_RELEASE)
MISCHIEF = {release.provider_model: release.mischief for release in RELEASES}


def kids_policy() -> guardrails_pb2.Policy:
    """The story teller's policy: the banned term is critical (a block, with the fallback story)."""
    return guardrails_pb2.Policy(
        description="What a children's story may say",
        rules=[
            guardrails_pb2.Rule(
                id="violence",
                severity=guardrails_pb2.SEVERITY_CRITICAL,
                category="violence",
                banned_terms=guardrails_pb2.BannedTermsRule(terms=[BANNED_TERM]),
            )
        ],
        fallback_content={"violence": POLICY_FALLBACK},
        default_fallback=POLICY_FALLBACK,
        fail_mode=guardrails_pb2.FAIL_MODE_CLOSED,
    )
