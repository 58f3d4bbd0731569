"""The guardrails monitor: policies of rules checked on generated text."""
