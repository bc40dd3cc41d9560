"""The vocabulary of reasons a file is not scored.

Rejections are data, not errors: every file that is not scored gets one of
these stable codes in ``instances.reason`` and the run goes on. Eligibility
failures are written ``ineligible:<rule>`` with the failing rule's name (see
``osteo_batch.archive.eligibility``), so the vocabulary of those grows with the rules.
One eligibility reason is built in and applies whatever the rules say:
``ineligible:study_date``, a study date no program should trust (after the
run date, before 1900, or unparseable), re-derived every night.
"""

from __future__ import annotations

from enum import Enum


class Reason(str, Enum):
    NOT_DICOM = "not_dicom"
    EMPTY_FILE = "empty_file"
    TRUNCATED = "truncated"
    UNREADABLE = "unreadable"  # permission denied, vanished, I/O error
    NO_PIXEL_DATA = "no_pixel_data"
    NOT_IMAGE = "not_an_image_sop_class"
    MISSING_SOP_INSTANCE_UID = "missing_sop_instance_uid"
    UNSUPPORTED_TRANSFER_SYNTAX = "unsupported_transfer_syntax"
    PIXELS_INCONSISTENT = "pixels_inconsistent_with_header"
    IMAGE_TOO_LARGE = "image_too_large"
    DECODE_FAILED = "pixel_decode_failed"
    BLANK_IMAGE = "blank_image"
    DUPLICATE = "duplicate_sop_instance_uid"
    AWAITING_SCORE = "awaiting_score"
    OUTSIDE_ARCHIVE = "outside_archive"  # a link that leaves the archive: never opened
    NOT_REGULAR_FILE = "not_regular_file"  # a FIFO, device or socket where a file was
    DECOMPRESSION_BOMB = "decompression_bomb"
    READ_TIMEOUT = "read_timeout"
    DECODE_TIMEOUT = "decode_timeout"
    RETRIEVE_FAILED = "retrieve_failed"  # PACS: the retrieval failed (refused, dropped); retried next night
    RETRIEVE_TIMEOUT = "retrieve_timeout"  # PACS: no answer in time; retried next night
    RETRIEVE_GONE = "retrieve_gone"  # PACS: listed, then gone when retrieved; retried while listed
    OWN_OBJECT = "osteo_batch_result"  # our own SR or heat map, back from the PACS: never scored
    STUDY_DATE = "ineligible:study_date"  # built-in eligibility check, see osteo_batch.archive.eligibility

    def __str__(self) -> str:  # so f-strings and Arrow columns get the code
        return self.value


#: What each code means, for the run summary and the README.
DESCRIPTIONS: dict[str, str] = {
    Reason.NOT_DICOM.value: "not a DICOM file (no DICM prefix and no parseable data set)",
    Reason.EMPTY_FILE.value: "zero-byte file",
    Reason.TRUNCATED.value: "file ends before its pixel data does (partial transfer)",
    Reason.UNREADABLE.value: "could not be read (permissions, vanished or I/O error)",
    Reason.NO_PIXEL_DATA.value: "DICOM without Pixel Data (7FE0,0010)",
    Reason.NOT_IMAGE.value: "SOP class is not an image (structured report, presentation state, ...)",
    Reason.MISSING_SOP_INSTANCE_UID.value: "no SOP Instance UID (0008,0018): identity unknown",
    Reason.UNSUPPORTED_TRANSFER_SYNTAX.value: "transfer syntax that no installed decoder handles",
    Reason.PIXELS_INCONSISTENT.value: "pixel data length disagrees with Rows x Columns x Bits Allocated",
    Reason.IMAGE_TOO_LARGE.value: "header claims an image beyond the configured size guard",
    Reason.DECODE_FAILED.value: "pixel data could not be decoded",
    Reason.BLANK_IMAGE.value: "no contrast at all after the display pipeline (e.g. Rescale Slope 0)",
    Reason.DUPLICATE.value: "same SOP Instance UID as another file; the copy kept is one that can be scored, "
                            "then the one with fewer damaged header values, then the first path in sort order",
    Reason.AWAITING_SCORE.value: "eligible, not scored yet by the current model",
    Reason.OUTSIDE_ARCHIVE.value: "a link whose target lies outside the archive and every [archive] allowed_roots "
                                  "(never opened)",
    Reason.NOT_REGULAR_FILE.value: "not a regular file (a FIFO, device or socket): never read",
    Reason.DECOMPRESSION_BOMB.value: "compressed data that would inflate beyond what the header's image size justifies",
    Reason.READ_TIMEOUT.value: "the header could not be read in the time allowed (a hung mount or a file that blocks)",
    Reason.DECODE_TIMEOUT.value: "the pixels could not be decoded in the time allowed for one image",
    Reason.RETRIEVE_FAILED.value: "the PACS listed the instance but its retrieval failed (refused or broken off); "
                                  "retried the next night",
    Reason.RETRIEVE_TIMEOUT.value: "the PACS did not deliver the instance in the time allowed; retried the next night",
    Reason.RETRIEVE_GONE.value: "the PACS listed the instance, then no longer had it when it was retrieved "
                                "(deleted in between); retried while the PACS lists it",
    Reason.OWN_OBJECT.value: "one of osteo-batch's own results sent back to the PACS (risk SR or heat map), "
                             "recognised by SOP class and manufacturer: never scored",
    Reason.STUDY_DATE.value: "study date after the run date (archive's local date), before 1900, or unparseable: "
                             "the age cannot be trusted; listed for the PACS administrator",
}


#: Why a folder of the archive could not be listed (``osteo_batch.archive.walk.dir_reason``).
#: Its files cannot get rows of their own: rows already in the index are kept
#: as last seen, and the folder is counted, with its reason, on the console,
#: the run page and the Prefect artifact.
FOLDER_DESCRIPTIONS: dict[str, str] = {
    "permission_denied": "this account may not list it (check the mount's permissions for the run's user)",
    "vanished": "it disappeared while the archive was walked",
    "io_error": "the file system answered with an I/O error (a failing disk or a dropped mount)",
}


def unreadable_folders_line(reasons: dict[str, int]) -> str | None:
    """One line for the operator, counts only (folder names can hold patient names), or None."""
    n = sum(reasons.values())
    if not n:
        return None
    parts = ", ".join(f"{v} {k}: {FOLDER_DESCRIPTIONS.get(k, k)}" for k, v in sorted(reasons.items()))
    return (f"{n} archive folder(s) could not be listed, so files under them were not swept tonight ({parts}); "
            "their files already indexed are kept as last seen")
