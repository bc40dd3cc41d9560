-- Index rows of one PACS source ($prefix: its URL and /studies/).
SELECT count(*) FROM instances WHERE starts_with(path, $prefix);
