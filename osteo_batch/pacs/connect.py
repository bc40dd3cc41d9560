"""Open the client a :class:`~osteo_batch.pacs.config.PacsSettings` names: DICOMweb or DIMSE.

Why here and not in the settings: credentials are read now, in the process
that talks to the PACS (a shard, a retrieval thread), from the environment
variable or the 0600 file the settings name, so they never travel in the
settings, a Prefect parameter or the store.
"""

from __future__ import annotations

from osteo_batch.pacs.client import PacsClient
from osteo_batch.pacs.config import PacsSettings


def connect(pacs: PacsSettings) -> PacsClient:
    """A new client for ``pacs``; the caller closes it.

    pydicom is silenced first: the clients build data sets from the PACS's
    answers, and pydicom's warnings about a malformed value quote it.
    """
    from osteo_batch.dicom.quiet import silence_pydicom

    silence_pydicom()
    u = pacs.parsed
    if u.protocol == "dicomweb":
        from osteo_batch.pacs.credentials import load_credentials
        from osteo_batch.pacs.dicomweb import DicomwebClient

        creds = load_credentials(pacs.credentials_var(), pacs.credentials_path())
        return DicomwebClient(u.base_url, credentials=creds, timeout_s=pacs.timeout_s, result_limit=pacs.result_limit)
    from osteo_batch.pacs.dimse import DimseClient

    return DimseClient(u.host, u.port, u.called_aet, calling_aet=pacs.calling_aet, timeout_s=pacs.timeout_s,
                      result_limit=pacs.result_limit)
