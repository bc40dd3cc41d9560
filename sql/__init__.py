"""The named SQL statements, shipped as package data (``osteo_batch.sql``); see ``osteo_batch.store``."""
