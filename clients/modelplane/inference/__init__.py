"""AI inference: LLMClient picks its model from the registry and prices every call."""
