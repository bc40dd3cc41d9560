"""One run: :mod:`.context` (what the run knows, built once), :mod:`.stages` and :mod:`.shards`
(the stages as plain functions), :mod:`.nightly` (a run from start to end), :mod:`.lock`
(one run per work folder), :mod:`.summary` (the run page and the Prefect artifact)."""
