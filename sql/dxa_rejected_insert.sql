-- Record DXA rows that could not be loaded; a reload of the same file replaces its record.
DELETE FROM dxa_rejected WHERE source = $source;
INSERT INTO dxa_rejected BY NAME SELECT * FROM rej;
