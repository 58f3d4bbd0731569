"""Log collection: typed events from every service, ingested in idempotent batches, queried and aggregated."""
