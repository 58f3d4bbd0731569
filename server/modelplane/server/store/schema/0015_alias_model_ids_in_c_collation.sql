-- modelplane: expand-only
-- Aliases and their history keep their model's id in the "C" collation, as models and model_versions do
-- (0002 left these two columns in the database's default). An equality between columns of two collations
-- has no collation to match an index with, so every read of a version found its aliases
-- (a.model_id = v.model_id) by scanning the whole alias table, and the alias filter of ListModelVersions did
-- the same for every version it looked at. Only the collation changes, and equality of text is the same in
-- both (both are deterministic): older code reads and writes these tables as before.
ALTER TABLE model_aliases ALTER COLUMN model_id TYPE text COLLATE "C";
ALTER TABLE alias_history
    ALTER COLUMN model_id TYPE text COLLATE "C",
    ALTER COLUMN alias TYPE text COLLATE "C";
