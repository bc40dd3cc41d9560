"""The JPEG 2000 readers agree bit for bit at every reduction level; Pillow reads from memory; the GPU path falls back.

Codestreams are written by real encoders (pylibjpeg-openjpeg, glymur's
OpenJPEG, OpenJPH for HTJ2K where installed): 12 and 16 bits, signed, 8 bits,
odd sizes, tiles, an image offset on the reference grid, a JP2 file in the
frame, lossy 9/7. glymur through a temporary file is the previous release's
reader, the reference.
"""

from __future__ import annotations

import tempfile

import numpy as np
import pytest

from osteo_batch.dicom import j2k
from osteo_batch.dicom.codestreams import j2k_claim


def _picture(rows: int, cols: int, bits: int, signed: bool = False, seed: int = 0) -> np.ndarray:
    """Structure, noise and both extremes of the range (where a reduced level overshoots and is clamped)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols]
    v = (x * 13 + y * 7 + rng.integers(0, 200, (rows, cols))) % (1 << bits)
    v[10:30, 10:40] = (1 << bits) - 1
    v[40:50, :] = 0
    if signed:
        v = v - (1 << (bits - 1))
    return v.astype(np.int16 if signed else np.uint16 if bits > 8 else np.uint8)


def _glymur_codestream(a: np.ndarray, **kw) -> bytes:
    import glymur

    with tempfile.TemporaryDirectory() as d:
        glymur.Jp2k(f"{d}/x.j2k", data=a, numres=6, **kw)
        with open(f"{d}/x.j2k", "rb") as f:
            return f.read()


def _codestreams() -> dict[str, bytes]:
    from openjpeg.utils import encode_array

    out = {
        "12-bit": encode_array(_picture(389, 517, 12), bits_stored=12),
        "16-bit": encode_array(_picture(301, 257, 16), bits_stored=16),
        "signed 12-bit": encode_array(_picture(301, 257, 12, True), bits_stored=12),
        "signed 16-bit": encode_array(_picture(255, 263, 16, True), bits_stored=16),
        "8-bit": encode_array(_picture(255, 263, 8), bits_stored=8),
        "JP2 file": encode_array(_picture(389, 517, 12), bits_stored=12, codec_format=1),
        "lossy 9/7": encode_array(_picture(389, 517, 12), bits_stored=12, compression_ratios=[15]),
        "tiles": _glymur_codestream(_picture(389, 517, 16), tilesize=(64, 96)),
        "image offset": _glymur_codestream(_picture(389, 517, 16), grid_offset=(5, 3)),
        "tiles and offset": _glymur_codestream(_picture(389, 517, 16), grid_offset=(5, 3), tilesize=(64, 96)),
    }
    from htj2k_factory import encode, ojph_compress

    if ojph_compress():
        out["HTJ2K lossless"] = encode(_picture(389, 517, 12), 12, levels=5)
        out["HTJ2K lossy"] = encode(_picture(389, 517, 12), 12, levels=5, qstep=0.001)
    return out


@pytest.fixture(scope="module")
def codestreams() -> dict[str, bytes]:
    return _codestreams()


def _levels(cs: bytes) -> range:
    return range(j2k_claim(cs).levels + 1)


def test_the_codestreams_cover_what_archives_hold(codestreams):
    claims = {name: j2k_claim(cs) for name, cs in codestreams.items()}
    assert {c.bits for c in claims.values()} >= {8, 12, 16} and any(c.signed for c in claims.values())
    assert claims["tiles"].tiles > 1 and claims["12-bit"].columns % 2 == 1
    geo = {name: j2k.geometry(cs) for name, cs in codestreams.items()}
    assert geo["JP2 file"].boxed and geo["image offset"].x0 == 3 and geo["image offset"].y0 == 5
    assert geo["12-bit"].reversible and not geo["lossy 9/7"].reversible and geo["tiles"].uniform
    assert j2k._tile_parts_keep_cod(codestreams["tiles"], geo["tiles"].tiles_at)


def test_pillow_equals_glymur_bit_for_bit_at_every_level(codestreams):
    for name, cs in codestreams.items():
        claim, geo = j2k_claim(cs), j2k.geometry(cs)
        if j2k.cpu_reader(geo, claim) != "pillow":
            continue
        for r in _levels(cs):
            ref = j2k._read_glymur(cs, r, claim, geo)
            got = j2k._read_pillow(cs, r, claim, geo)
            assert got.shape == ref.shape == geo.reduced_shape(r), (name, r)
            assert np.array_equal(got.astype(np.int32), ref.astype(np.int32)), (name, r)
            assert got.dtype == (np.int16 if claim.signed else np.uint16)


def test_an_image_offset_goes_to_glymur_which_pillow_cannot_read(codestreams):
    cs = codestreams["image offset"]
    claim, geo = j2k_claim(cs), j2k.geometry(cs)
    with pytest.raises(OSError):  # Pillow compares reduced tile corners with the full-size image offset
        j2k._read_pillow(cs, 2, claim, geo)
    assert j2k.cpu_reader(geo, claim, "pillow") == "glymur"
    np.testing.assert_array_equal(j2k.read_reduced(cs, 2, claim, "pillow"), j2k._read_glymur(cs, 2, claim, geo))


def test_pillow_reads_from_memory_without_a_temporary_file(codestreams, monkeypatch):
    cs = codestreams["12-bit"]
    claim, geo = j2k_claim(cs), j2k.geometry(cs)
    ref = j2k._read_glymur(cs, 2, claim, geo)

    def no_files(*a, **kw):
        raise AssertionError("a temporary file was made")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", no_files)
    for reader in ("auto", "pillow"):
        np.testing.assert_array_equal(j2k.read_reduced(cs, 2, claim, reader), ref)
    with pytest.raises(AssertionError, match="temporary file"):
        j2k.read_reduced(cs, 2, claim, "glymur")


def test_an_unknown_reader_is_refused_by_name(codestreams):
    from osteo_batch.dicom.display import DisplayOptions

    with pytest.raises(ValueError, match="pillow"):
        DisplayOptions(j2k="openjpeg")
    cs = codestreams["12-bit"]
    with pytest.raises(ValueError, match="one of"):
        j2k.read_reduced(cs, 1, j2k_claim(cs), "kakadu")


def test_the_gpu_paths_wavelet_gives_the_reduced_decode_exactly(codestreams):
    """nvImageCodec decodes in full; the 5/3 low band of the full image must be the reduced level (run on CPU torch)."""
    torch = pytest.importorskip("torch")
    from osteo_batch.dicom.nvimgcodec import low_band

    checked, threads = 0, torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: more threads only contend on a shared machine
    try:
        for name, cs in codestreams.items():
            claim, geo = j2k_claim(cs), j2k.geometry(cs)
            if not geo.reversible or claim.signed or geo.boxed:
                continue
            full = torch.from_numpy(j2k._read_glymur(cs, 0, claim, geo).astype(np.int32))
            for r in _levels(cs):
                ref = j2k._read_glymur(cs, r, claim, geo).astype(np.int32)
                got = low_band(full, r, geo.tiles(), (geo.y0, geo.x0), claim.bits).numpy()
                assert got.shape == ref.shape and np.array_equal(got, ref), (name, r)
            checked += 1
    finally:
        torch.set_num_threads(threads)
    assert checked >= 5


def test_gpu_reader_on_a_machine_without_cuda_falls_back_to_the_cpu_result(codestreams):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the fallback is for machines without")
    from osteo_batch.dicom import nvimgcodec

    assert nvimgcodec.usable() is False
    for name in ("12-bit", "tiles", "signed 12-bit"):
        cs = codestreams[name]
        claim, geo = j2k_claim(cs), j2k.geometry(cs)
        np.testing.assert_array_equal(j2k.read_reduced(cs, 2, claim, "nvimgcodec"), j2k._read_glymur(cs, 2, claim, geo))


def test_only_frames_the_wavelet_reproduces_go_to_the_gpu(codestreams):
    exact = {name: j2k.gpu_exact(cs, j2k.geometry(cs), j2k_claim(cs)) for name, cs in codestreams.items()}
    assert exact["12-bit"] and exact["tiles"] and exact["image offset"]
    assert not exact["lossy 9/7"] and not exact["signed 12-bit"] and not exact["JP2 file"]


def _j2k_file(tmp_path, name: str, codestream: bytes, px: np.ndarray, *, signed: bool = False):
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    from dicom_factory import dataset, write

    ds = dataset(px.view(np.uint16), rows=px.shape[0], cols=px.shape[1])
    ds.PixelRepresentation = int(signed)
    if signed:  # a CT-like signed image with a rescale, as some archives hold
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([codestream])
    ds["PixelData"].VR = "OB"
    return write(ds, tmp_path / name)


def test_every_reader_gives_the_model_the_same_image(tmp_path):
    from openjpeg.utils import encode_array

    from osteo_batch.dicom.display import DisplayOptions
    from osteo_batch.dicom.pixels import load_image

    px, spx = _picture(301, 389, 12, seed=3), _picture(301, 389, 12, signed=True, seed=4)
    files = [_j2k_file(tmp_path, "bare", encode_array(px, bits_stored=12), px),
             _j2k_file(tmp_path, "jp2", encode_array(px, bits_stored=12, codec_format=1), px),
             _j2k_file(tmp_path, "signed", encode_array(spx, bits_stored=12), spx, signed=True)]
    for f in files:
        images = {r: load_image(f, 64, DisplayOptions(j2k=r)) for r in j2k.READERS}
        for reader, img in images.items():
            np.testing.assert_array_equal(img, images["glymur"], err_msg=f"{f.name}: {reader}")
        full = load_image(f, 64, DisplayOptions(reduce=False))
        diff = np.abs(full - images["auto"])
        assert diff.max() > 0 and diff.mean() < 0.05, "a reduced level (not a full decode), of the same picture"


def test_a_cpu_process_decoding_with_auto_does_not_import_torch():
    import os
    import subprocess
    import sys

    if any(os.path.exists(d) for d in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg")):
        pytest.skip("an NVIDIA device node is here: auto may look for the GPU")
    code = (
        "import sys, numpy as np\n"
        "from openjpeg.utils import encode_array\n"
        "from osteo_batch.dicom import j2k\n"
        "from osteo_batch.dicom.codestreams import j2k_claim\n"
        "cs = encode_array((np.arange(64 * 48).reshape(64, 48) % 4096).astype(np.uint16), bits_stored=12)\n"
        "assert j2k.read_reduced(cs, 2, j2k_claim(cs), 'auto').shape == (16, 12)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_a_tile_part_with_its_own_coding_style_stays_on_the_cpu(codestreams):
    import struct

    cs = codestreams["12-bit"]
    geo = j2k.geometry(cs)
    cod = cs.index(b"\xff\x52")
    cod_segment = cs[cod : cod + 2 + struct.unpack(">H", cs[cod + 2 : cod + 4])[0]]
    sot = geo.tiles_at
    psot = struct.unpack(">I", cs[sot + 6 : sot + 10])[0]
    psot = 0 if psot == 0 else psot + len(cod_segment)
    own = cs[: sot + 6] + struct.pack(">I", psot) + cs[sot + 10 : sot + 12] + cod_segment + cs[sot + 12 :]
    claim = j2k_claim(own)
    assert j2k.gpu_exact(cs, geo, claim) and not j2k.gpu_exact(own, j2k.geometry(own), claim)
    np.testing.assert_array_equal(j2k._read_glymur(own, 2, claim, geo), j2k._read_glymur(cs, 2, claim, geo))
