-- modelplane: expand-only
-- Holds number 0010, which another change of the schema takes; it changes nothing.
SELECT 1;
