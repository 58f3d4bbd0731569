-- An ingestion transaction takes its batch number with nextval('log_ingest_batches') before its COPY, so
-- each row can take that number from the session instead of carrying it: the server then COPYs the rows
-- as it converted them, without building a second tuple per event. Inserts through the parent table
-- use the parent's default. A session that never took a number still fails loudly, as before.
ALTER TABLE log_events ALTER COLUMN ingest_batch SET DEFAULT currval('log_ingest_batches');
