"""Results back to where the images came from: a DICOM SR per scored image, a FHIR bundle per run.

Why a package of its own: scoring ends in our store and worklist, but a
radiologist reads in the PACS viewer and a GP in the record. :mod:`.sr` builds
the SR a PACS client stores, :mod:`.heatmap` the Grad-CAM Secondary Capture, :mod:`.fhir` the
RiskAssessment bundle a FHIR server takes, and :mod:`.own` lets the sweep
know those objects when they come back, so we never score ourselves.

This module imports nothing heavy: it holds the one text every result carries.
"""

from __future__ import annotations

#: What every result says beside the score, word for word the same in the SR and the FHIR note.
DISCLAIMER = (
    "Screening aid only: osteoporosis risk from a chest radiograph. "
    "DXA confirms the diagnosis; a low score does not rule osteoporosis out."
)

__all__ = ["DISCLAIMER"]
