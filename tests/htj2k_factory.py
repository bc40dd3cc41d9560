"""HTJ2K DICOM files for tests: a native data set's pixels, compressed by OpenJPH, encapsulated by pydicom.

Why OpenJPH's command line (Debian's ``openjph-tools``, installed by
scripts/setup.sh): no Python package here encodes HTJ2K, and a codestream
from an encoder we did not write is the honest test of our readers. The
native data set is written with pydicom (:func:`phantom`, from the same
phantoms the synthetic archive holds), its pixels go to ``ojph_compress`` as a
PGM, and the ``.j2c`` codestream is encapsulated with
:func:`pydicom.encaps.encapsulate` into a copy of the data set
(:func:`htj2k_twin`), so the twin differs from its original only in how the
pixels are stored.

The three syntaxes (PS3.5 8.2.14, 10.18): 4.201 HTJ2K Lossless, 4.202 HTJ2K
Lossless RPCL (RPCL order, a base resolution of at most 64 px, TLM marker
segments present), 4.203 HTJ2K (lossless or lossy; lossy here, with the 9/7
wavelet and ``qstep``). OpenJPH 0.9 writes RPCL and one tile-part but no TLM
from its command line, so :func:`add_tlm` adds the one the 4.202 syntax asks for.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

LOSSLESS = "1.2.840.10008.1.2.4.201"
LOSSLESS_RPCL = "1.2.840.10008.1.2.4.202"
LOSSY = "1.2.840.10008.1.2.4.203"
HIGH_QUALITY, COARSE = 0.001, 0.02  # qstep of the lossy 4.203 twins (compression ratios about 2.5 and 15 here)


def ojph_compress() -> str | None:
    """The path of OpenJPH's encoder, or None where ``openjph-tools`` is not installed."""
    return shutil.which("ojph_compress")


def phantom(rows: int, cols: int, *, bits: int = 12, seed: int = 1, photometric: str = "MONOCHROME2",
            uid: str = "2.25.77001"):
    """A native (explicit VR little endian) phantom chest radiograph of ``bits`` stored bits, as pydicom writes it."""
    from dicom_factory import plan
    from osteo_batch.synth.cohort import build_dataset
    from osteo_batch.synth.phantom import draw_phantom

    p = plan(rows=rows, cols=cols, seed=seed, photometric=photometric, sop_instance_uid=uid,
             study_instance_uid=uid + ".1", series_instance_uid=uid + ".2")
    img, _mask, (wlo, whi) = draw_phantom(replace(p, z=-1.0 if seed % 2 else 0.8))
    top = 2**bits - 1
    px = np.round(img * top).astype(np.uint16)
    window = (wlo * top, whi * top)
    if photometric == "MONOCHROME1":
        px = (top - px).astype(np.uint16)
        window = (top - window[1], top - window[0])
    ds = build_dataset(p, px, window)
    ds.BitsStored, ds.HighBit = bits, bits - 1
    return ds


def complete_dx(ds):
    """``ds`` with the DX For Presentation attributes the synthetic archive leaves out, so dciodvfy finds no errors."""
    from pydicom.dataset import Dataset

    def code(value: str, meaning: str) -> Dataset:
        c = Dataset()
        c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = value, "SCT", meaning
        return c

    mono1 = str(ds.PhotometricInterpretation) == "MONOCHROME1"
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.PatientOrientation = ["L", "F"]
    ds.AnatomicRegionSequence = [code("43799004", "Chest")]
    ds.ViewCodeSequence = [code("399348003", "postero-anterior")]
    ds.ImageLaterality = "U"
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = 1 if mono1 else -1  # -1: higher values, less X-ray intensity (bone)
    ds.PresentationLUTShape = "INVERSE" if mono1 else "IDENTITY"
    ds.LossyImageCompression = "00"
    ds.BurnedInAnnotation = "NO"
    ds.DetectorType = "DIRECT"
    ds.ImagerPixelSpacing = [0.15, 0.15]
    ds.PositionerType = ""
    ds.AcquisitionContextSequence = []
    return ds


def decompositions(rows: int, cols: int, base: int = 64) -> int:
    """The fewest wavelet levels that bring the longer side to at most ``base`` px (4.202's thumbnail rule)."""
    k, side = 0, max(rows, cols)
    while -(-side // 2**k) > base:
        k += 1
    return k


def encode(pixels: np.ndarray, bits: int, *, qstep: float | None = None, levels: int | None = None,
           order: str = "RPCL") -> bytes:
    """An HTJ2K codestream of unsigned ``pixels`` of ``bits`` bits: reversible 5/3, or 9/7 at ``qstep``."""
    exe = ojph_compress()
    if exe is None:
        raise RuntimeError("ojph_compress is not installed (Debian openjph-tools; scripts/setup.sh installs it)")
    rows, cols = pixels.shape
    if pixels.dtype != np.uint16 or int(pixels.max()) >= 2**bits:
        raise ValueError(f"pixels must be uint16 within {bits} bits")
    levels = decompositions(rows, cols) if levels is None else levels
    with tempfile.TemporaryDirectory(prefix="htj2k-") as tmp:
        src, out = Path(tmp) / "in.pgm", Path(tmp) / "out.j2c"
        # PGM: 16-bit samples are big-endian; maxval 2**bits - 1 makes OpenJPH write a `bits`-bit component
        src.write_bytes(b"P5\n%d %d\n%d\n" % (cols, rows, 2**bits - 1) + pixels.astype(">u2").tobytes())
        cmd = [exe, "-i", str(src), "-o", str(out), "-num_decomps", str(levels), "-prog_order", order]
        cmd += ["-reversible", "true"] if qstep is None else ["-reversible", "false", "-qstep", repr(qstep)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if r.returncode != 0 or not out.exists():
            raise RuntimeError(f"ojph_compress failed ({r.returncode}): {(r.stdout + r.stderr)[-500:]}")
        return out.read_bytes()


def _segments(cs: bytes):
    """(marker, position) of each main-header marker segment after SOC, up to the first SOT."""
    pos = 2
    while pos + 4 <= len(cs):
        m = struct.unpack(">H", cs[pos : pos + 2])[0]
        yield m, pos
        if m == 0xFF90:
            return
        pos += 2 + struct.unpack(">H", cs[pos + 2 : pos + 4])[0]
    raise ValueError("no SOT marker")


def add_tlm(cs: bytes) -> bytes:
    """``cs`` with a TLM marker segment (ISO 15444-1 A.7.1) before its first tile-part.

    One Ptlm (32 bit, Stlm 0x40: no tile indices, tile-parts in order) per
    tile-part, each the Psot of that tile-part's SOT.
    """
    sot = next(p for m, p in _segments(cs) if m == 0xFF90)
    lengths, pos = [], sot
    while cs[pos : pos + 2] == b"\xff\x90":
        psot = struct.unpack(">I", cs[pos + 6 : pos + 10])[0]
        if psot == 0:  # the last tile-part runs to EOC
            psot = len(cs) - 2 - pos
        lengths.append(psot)
        pos += psot
    if cs[pos:] != b"\xff\xd9":
        raise ValueError("tile-parts do not end at EOC")
    body = bytes([0, 0x40]) + b"".join(struct.pack(">I", n) for n in lengths)
    return cs[:sot] + b"\xff\x55" + struct.pack(">H", 2 + len(body)) + body + cs[sot:]


def main_header_markers(cs: bytes) -> list[int]:
    return [m for m, _ in _segments(cs)]


def htj2k_twin(ds, syntax: str = LOSSLESS, *, qstep: float = HIGH_QUALITY, order: str = "RPCL"):
    """A copy of the native ``ds`` whose pixels are one HTJ2K frame in ``syntax``.

    4.201 and 4.202 are reversible (lossless, ``qstep`` unused); 4.203 is
    irreversible at ``qstep``, marked lossy as PS3.3 C.7.6.1.1.5 asks (Lossy Image
    Compression, its ratio and method ``ISO_15444_15``).
    """
    from copy import deepcopy

    from pydicom.encaps import encapsulate

    if syntax not in (LOSSLESS, LOSSLESS_RPCL, LOSSY):
        raise ValueError(f"{syntax} is not an HTJ2K transfer syntax")
    px = ds.pixel_array
    bits = int(ds.BitsStored)
    if syntax == LOSSLESS_RPCL and order != "RPCL":
        raise ValueError("4.202 is RPCL")
    cs = encode(px, bits, qstep=qstep if syntax == LOSSY else None, order=order)
    if syntax == LOSSLESS_RPCL:
        cs = add_tlm(cs)
    out = deepcopy(ds)
    out.file_meta.TransferSyntaxUID = syntax
    out.PixelData = encapsulate([cs])
    out["PixelData"].VR = "OB"
    if syntax == LOSSY:
        out.LossyImageCompression = "01"
        out.LossyImageCompressionRatio = f"{px.nbytes / len(cs):.4g}"
        out.LossyImageCompressionMethod = "ISO_15444_15"
    return out


#: (name, rows, cols, bits stored, photometric, seed): odd and even sizes, 12 and 16 bits, both polarities
CASES = (
    ("12bit-odd", 1301, 1100, 12, "MONOCHROME2", 1),
    ("16bit-odd", 1037, 1399, 16, "MONOCHROME1", 2),
    ("12bit-even", 1400, 1024, 12, "MONOCHROME2", 3),
)


@dataclass
class Pair:
    """A native original and its twins on disk."""

    name: str
    native: Path
    twins: dict[str, Path] = field(default_factory=dict)  # syntax, or "coarse" (4.203 at COARSE) -> file
    j2k: Path | None = None  # the same pixels in JPEG 2000 lossless (4.90, pylibjpeg-openjpeg's encoder)


def write_pairs(root: Path, cases=CASES) -> list[Pair]:
    """Each case as a complete DX file, its HTJ2K twins (4.201, 4.202, 4.203 at two rates) and its JPEG 2000 twin."""
    import pydicom
    from pydicom.uid import JPEG2000Lossless

    out = []
    for i, (name, rows, cols, bits, pi, seed) in enumerate(cases):
        ds = complete_dx(phantom(rows, cols, bits=bits, seed=seed, photometric=pi, uid=f"2.25.7700{i}"))
        pair = Pair(name, root / f"{name}-native.dcm", j2k=root / f"{name}-j2k.dcm")
        ds.save_as(pair.native, enforce_file_format=True)
        for key, syntax, q in ((LOSSLESS, LOSSLESS, 0), (LOSSLESS_RPCL, LOSSLESS_RPCL, 0),
                               (LOSSY, LOSSY, HIGH_QUALITY), ("coarse", LOSSY, COARSE)):
            pair.twins[key] = root / f"{name}-{key}.dcm"
            htj2k_twin(ds, syntax, qstep=q).save_as(pair.twins[key], enforce_file_format=True)
        j = pydicom.dcmread(pair.native)
        j.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg", generate_instance_uid=False)
        j.save_as(pair.j2k, enforce_file_format=True)
        out.append(pair)
    return out
