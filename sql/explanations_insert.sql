-- Record heat maps written this run (expl: Arrow table).
INSERT OR REPLACE INTO explanations BY NAME SELECT * FROM expl;
