-- Load parsed DXA rows (dxa_rows: Arrow); a newer file's values win for the same exam.
INSERT OR REPLACE INTO dxa BY NAME SELECT * FROM dxa_rows;
