-- Replace the rows of re-read files with their new header rows (new_rows: Arrow).
DELETE FROM instances WHERE path IN (SELECT path FROM new_rows);
INSERT INTO instances BY NAME SELECT * FROM new_rows;
