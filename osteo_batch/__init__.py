"""osteo-batch: nightly osteoporosis screening of archived chest radiographs."""

__version__ = "0.1.0"
