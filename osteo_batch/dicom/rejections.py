"""The two ways the dicom package refuses a file, each carrying its reason code.

Why these are errors at all: a file that cannot be opened or decoded is
raised out of the reader that found it (deep in pydicom's call stack) to the
one place that records it, where it becomes an ``instances`` row with
``reason`` (the sweep, :mod:`osteo_batch.archive.sweep`) or a decode
rejection (:class:`osteo_batch.scoring.tensors.DicomDataset`), and the night
goes on. So they are internal errors (:class:`~osteo_batch.errors.InternalError`):
one that reaches the user is a broken promise of ours, not a file for them to fix. The
error's ``code`` is the reason code (a :class:`~osteo_batch.reasons.Reason`
value), the same string ``reason`` holds.

Messages hold the reason and a short detail, never a header value or a path.
"""

from __future__ import annotations

from osteo_batch.errors import InternalError


class Rejection(InternalError):
    """A file refused with a reason code (``reason`` and ``code``), and a short ``detail`` without patient data."""

    code = "file_rejected"

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}", code=reason)
        self.reason = reason
        self.detail = detail

    def __reduce__(self):  # so a rejection crosses a process pool as itself
        return type(self), (self.reason, self.detail)


class DatasetError(Rejection):
    """A file that cannot be opened as a data set (:func:`osteo_batch.dicom.dataset.open_dataset`)."""


class PixelError(Rejection, ValueError):
    """A file whose pixels cannot be turned into a model input (:func:`osteo_batch.dicom.pixels.load_image`)."""
