"""The modelplane gRPC server: registry, deployments, guardrails and logs on Postgres."""
