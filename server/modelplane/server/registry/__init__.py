"""The model registry capability: models, versions, aliases, resolution, watch."""
