"""Our codestream header parsers read what pydicom's reference files say, without a private pydicom API.

Every JPEG, JPEG-LS, JPEG 2000 and HTJ2K file pydicom ships (offline, in its
test data) is a codestream some encoder really wrote: the claim parsed from
its first frame must be the image its DICOM header describes (rows, columns,
components; a precision no larger than Bits Allocated), and for JPEG 2000 the
precision and sign must be what pydicom's public ``get_j2k_parameters`` reads.
"""

from __future__ import annotations

import os

import pydicom
import pytest
from pydicom.data import get_testdata_files
from pydicom.encaps import generate_frames
from pydicom.pixels.utils import get_j2k_parameters

from osteo_batch.dicom.codestreams import j2k_claim, jpeg_claim
from osteo_batch.dicom.frames import J2K, JPEG
from osteo_batch.dicom.quiet import reading

#: Reference files whose first "frame" is not a whole codestream on purpose (pydicom tests its errors with them).
DAMAGED = {"JPEG2000-embedded-sequence-delimiter.dcm", "UN_sequence.dcm", "emri_small_jpeg_2k_lossless_too_short.dcm"}


def _compressed_files() -> list[str]:
    out = []
    with reading():
        for f in sorted(get_testdata_files("*.dcm")):
            if os.path.basename(f) in DAMAGED:
                continue
            try:
                ts = str(pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID)
            except Exception:  # noqa: BLE001 (pydicom's deliberately broken files: not codestreams)
                continue
            if ts in J2K or ts in JPEG:
                out.append(f)
    return out


FILES = _compressed_files()


def test_there_are_reference_codestreams_of_every_family():
    with reading():
        syntaxes = {str(pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID) for f in FILES}
    assert len(FILES) >= 20
    assert syntaxes & J2K and {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80"} <= syntaxes


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_the_claim_is_the_image_the_header_describes(path):
    with reading():
        ds = pydicom.dcmread(path)
    ts = str(ds.file_meta.TransferSyntaxUID)
    frame = next(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1) or 1)))
    claim = (j2k_claim if ts in J2K else jpeg_claim)(frame)
    assert (claim.rows, claim.columns, claim.samples) == (ds.Rows, ds.Columns, ds.SamplesPerPixel)
    assert 1 <= claim.bits <= ds.BitsAllocated
    if ts in J2K:
        public = get_j2k_parameters(frame)
        assert (claim.bits, claim.signed) == (public["precision"], public["is_signed"])
        assert claim.tiles >= 1


def test_a_cut_or_foreign_codestream_is_refused_by_the_parser():
    with pytest.raises(ValueError, match="no SOI"):
        jpeg_claim(b"\x00\x00\xff\xd8")
    with pytest.raises(ValueError, match="frame header|marker segment runs past"):
        jpeg_claim(b"\xff\xd8\xff\xc0\x00\x11\x08\x00")  # SOF0 cut after its precision
    with pytest.raises(ValueError, match="no SOC and SIZ"):
        j2k_claim(b"\xff\xd8\xff\xe0")
