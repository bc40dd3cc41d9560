-- Number of score rows in the store.
SELECT count(*) FROM scores;
