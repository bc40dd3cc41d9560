"""``osteo-batch``: the command line, one module per area (see ``main``)."""

from osteo_batch.cli.main import main

__all__ = ["main"]
