-- How many of new_rows (Arrow, with path) have no index row yet.
SELECT count(*) FROM new_rows WHERE path NOT IN (SELECT path FROM instances);
