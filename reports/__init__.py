"""The Jinja2 page templates, shipped as package data (``osteo_batch.reports``); see ``osteo_batch.render``."""
