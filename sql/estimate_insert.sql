-- Record one estimate (est: an Arrow table of one row, named as the estimates table's columns).
INSERT OR REPLACE INTO estimates BY NAME SELECT * FROM est;
