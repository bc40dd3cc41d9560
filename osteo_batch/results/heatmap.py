"""The Grad-CAM heat map as a DICOM Secondary Capture, so the viewer shows where the model looked.

Why a Secondary Capture: the overlay is a rendered RGB picture, not a
measurement or a segmentation of the radiograph, and every PACS viewer shows
an SC. It goes in the source's study, in its own series (derived, like the
SR's, from the study and the model), with our Manufacturer, model name and
series description (:mod:`osteo_batch.results.own`), so that the sweep knows
it as ours when it comes back and never scores it. Its Source Image Sequence
names the radiograph it was made from; its SOP Instance UID is derived from
the radiograph's and the model ID, so re-sending replaces and never duplicates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from osteo_batch.errors import InternalError
from osteo_batch.results.own import MANUFACTURER, SC_MODEL_NAME, SERIES_DESCRIPTION_SC
from osteo_batch.results.sr import ScoredResult, derived_uid, source_header

if TYPE_CHECKING:
    import numpy as np
    import pydicom

__all__ = ["build_heatmap_sc", "sc_uid", "sc_series_uid", "SC_SERIES_NUMBER"]

#: Series Number of the heat-map series: right after the risk SR's (9901).
SC_SERIES_NUMBER = 9902
_NS_SC = "osteo-batch-sc"
_NS_SC_SERIES = "osteo-batch-sc-series"


def sc_uid(source_sop_instance_uid: str, model_id: str) -> str:
    """The SOP Instance UID of ``model_id``'s heat map for the image ``source_sop_instance_uid``."""
    return derived_uid(_NS_SC, source_sop_instance_uid, model_id)


def sc_series_uid(study_instance_uid: str, model_id: str) -> str:
    """The Series Instance UID of ``model_id``'s heat-map series in the study ``study_instance_uid``."""
    return derived_uid(_NS_SC_SERIES, study_instance_uid, model_id)


def build_heatmap_sc(source: pydicom.Dataset, rgb: np.ndarray, result: ScoredResult) -> pydicom.Dataset:
    """A Secondary Capture holding ``rgb`` (rows × columns × 3, uint8), the heat map over the image ``source``.

    ``source`` is the radiograph's header (not changed); ``result`` the score
    the map explains. ``save_as(path, enforce_file_format=True)`` writes it.
    """
    import numpy as np
    from highdicom.sc import SCImage
    from pydicom.dataset import Dataset
    from pydicom.uid import ExplicitVRLittleEndian

    header = source_header(source)
    if str(header.SOPInstanceUID) != result.sop_instance_uid:
        raise InternalError("the heat map's result is for another image than the source header given with it",
                            code="sc_source_mismatch")
    if not (isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
            and min(rgb.shape[:2]) > 0):
        shape = getattr(rgb, "shape", None)
        raise InternalError(f"a heat map is a rows x columns x 3 uint8 array, got {getattr(rgb, 'dtype', type(rgb))} "
                            f"of shape {shape}", code="sc_pixels_invalid")
    orientation = tuple(str(v) for v in (header.get("PatientOrientation") or ()))
    orientation = orientation if len(orientation) == 2 else ()
    sc = SCImage.from_ref_dataset(
        header,
        pixel_array=np.ascontiguousarray(rgb),
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=sc_series_uid(str(header.StudyInstanceUID), result.model_id),
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=sc_uid(result.sop_instance_uid, result.model_id),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=SC_MODEL_NAME,
        software_versions=[v[:64] for v in (result.model_id, result.model_version) if v],
        series_description=SERIES_DESCRIPTION_SC,
        patient_orientation=orientation or ("L", "F"),  # highdicom insists on one; emptied below when unknown
        content_date=result.run_date,
        series_date=result.run_date,
        transfer_syntax_uid=ExplicitVRLittleEndian,
    )
    if header.get("BodyPartExamined"):  # a chest is unpaired: with the body part named, Laterality stays absent
        sc.BodyPartExamined = header.BodyPartExamined
    elif "Laterality" not in sc:  # unknown body part: Type 2C Laterality present and empty ("not known")
        sc.Laterality = None
    if not orientation:  # Type 2C: empty says "not known", a guess from the view position would be a claim
        sc.PatientOrientation = None
    ref = Dataset()
    ref.ReferencedSOPClassUID = header.SOPClassUID
    ref.ReferencedSOPInstanceUID = header.SOPInstanceUID
    sc.SourceImageSequence = [ref]
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.DerivationDescription = f"Grad-CAM heat map of model {result.model_id}"[:1024]
    sc.BurnedInAnnotation = "NO"
    sc.SeriesDescription = SERIES_DESCRIPTION_SC
    return sc
