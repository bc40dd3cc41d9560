"""JPEG 2000 on the GPU (NVIDIA nvImageCodec with nvJPEG2000), reduced to the level the CPU readers give.

Why: on a GPU node decoding, not the model, bounds the backlog
(about 0.1 s of a core for a reduced JPEG 2000 read, against a model that
scores over a thousand images a second). nvImageCodec decodes only in full
(it has regions, no resolution levels), so the reduced level is computed
here on the GPU from the full image with the reversible 5/3 wavelet
(ISO 15444-1 F.4.8.2, columns then rows at each level, whole-sample symmetric
extension, per tile): for a reversible codestream that is exactly the level
OpenJPEG's reduced decode reconstructs, clamped to the sample range as
OpenJPEG clamps it. :func:`osteo_batch.dicom.j2k.gpu_exact` says which frames
qualify; every other frame, and every failure here, goes to the CPU readers.

Optional: ``pip install 'osteo-batch[gpu]'`` (nvidia-nvimgcodec-cu13 with its
nvjpeg2k extra). Nothing is imported until a GPU is known to be there, so a
CPU-only site never loads CUDA libraries from a DataLoader worker.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys

import numpy as np

#: Device nodes of an NVIDIA driver (Linux, and WSL's GPU paravirtualisation).
_DEVICE_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg")


def _ceil(x: int, r: int) -> int:
    return -(-x >> r)


def _low(x, p: int):
    """The 5/3 low band of ``x`` (int32) along dim 0, whose first sample sits at an index of parity ``p``."""
    import torch

    n = x.shape[0]
    if n < 2:  # one sample: low band itself at an even index, the high band at an odd one
        return x if p == 0 else x[:0]
    ev, od = x[p::2], x[1 - p::2]
    ne, no = ev.shape[0], od.shape[0]
    if p == 0:  # neighbours of each odd sample, mirrored at the ends
        left, right = ev[:no], ev[1 : no + 1] if ne > no else torch.cat([ev[1:], ev[-1:]])
    else:
        left, right = torch.cat([ev[:1], ev[: no - 1]]), ev if ne == no else torch.cat([ev, ev[-1:]])
    d = od - ((left + right) >> 1)
    if p == 0:
        dl, dr = torch.cat([d[:1], d[: ne - 1]]), d if no == ne else torch.cat([d, d[-1:]])
    else:
        dl, dr = d[:ne], d[1 : ne + 1] if no > ne else torch.cat([d[1:], d[-1:]])
    return ev + ((dl + dr + 2) >> 2)


def low_band(img, r: int, tiles: list[tuple[int, int, int, int]], origin: tuple[int, int], bits: int):
    """Resolution level ``r`` of the unsigned ``bits``-bit image ``img`` (a torch tensor, any device).

    ``tiles``: (top, left, bottom, right) of each tile on the reference grid,
    cut to the image (:meth:`osteo_batch.dicom.j2k.Geometry.tiles`);
    ``origin``: the image's (top, left) there. The DC level shift commutes
    with the integer lifting steps, so the stored values are transformed as
    they are.
    """
    import torch

    y0, x0 = origin
    rows = _ceil(max(t[2] for t in tiles), r) - _ceil(y0, r)
    cols = _ceil(max(t[3] for t in tiles), r) - _ceil(x0, r)
    x = img.to(torch.int32)
    out = torch.empty((rows, cols), dtype=torch.int32, device=x.device)
    for top, left, bottom, right in tiles:
        band, ty, tx = x[top - y0 : bottom - y0, left - x0 : right - x0], top, left
        for _ in range(r):
            band = _low(band, ty & 1)  # columns
            band = _low(band.T, tx & 1).T  # rows
            ty, tx = _ceil(ty, 1), _ceil(tx, 1)
        out[_ceil(top, r) - _ceil(y0, r) : _ceil(bottom, r) - _ceil(y0, r),
            _ceil(left, r) - _ceil(x0, r) : _ceil(right, r) - _ceil(x0, r)] = band
    return out.clamp_(0, (1 << bits) - 1)


@functools.cache
def _decoder():
    """One GPU-only decoder per process (the probe and every read share it); raises where there is none."""
    import torch
    import nvidia.nvimgcodec as nvimgcodec

    backends = [nvimgcodec.Backend(nvimgcodec.BackendKind.GPU_ONLY)]
    return nvimgcodec.Decoder(device_id=torch.cuda.current_device(), max_num_cpu_threads=1, backends=backends)


def _decode_full(frame: bytes):
    """The whole image on the GPU as a 2-D tensor, or None when nvImageCodec declined it."""
    import torch
    import nvidia.nvimgcodec as nvimgcodec

    params = nvimgcodec.DecodeParams(apply_exif_orientation=False, color_spec=nvimgcodec.ColorSpec.UNCHANGED,
                                     allow_any_depth=True, sample_format=nvimgcodec.SampleFormat.P_UNCHANGED)
    stream = torch.cuda.current_stream()
    img = _decoder().decode(nvimgcodec.CodeStream(frame), params=params, cuda_stream=stream.cuda_stream)
    if img is None:
        return None
    t = torch.from_dlpack(img)
    stream.synchronize()
    return t.reshape(int(img.height), int(img.width)) if t.numel() == int(img.height) * int(img.width) else None


@functools.cache
def usable() -> bool:
    """Whether this process can decode JPEG 2000 exactly on a GPU (probed once per process).

    Needs torch with CUDA, nvImageCodec, and a decode of a small 12-bit test
    codestream that gives its values back unscaled; cached, because the
    answer cannot change within a process and the probe costs a CUDA start.
    A process that has not imported torch and sees no NVIDIA device node is
    answered without importing it (a CPU-only decoder stays light).
    """
    try:
        if importlib.util.find_spec("torch") is None or importlib.util.find_spec("nvidia.nvimgcodec") is None:
            return False
    except (ImportError, ValueError):
        return False
    if "torch" not in sys.modules and not any(os.path.exists(d) for d in _DEVICE_NODES):
        return False
    import torch

    if not torch.cuda.is_available():
        return False
    try:
        from openjpeg.utils import encode_array

        y, x = np.mgrid[0:37, 0:29]
        ref = ((x * 131 + y * 71) % 4096).astype(np.uint16)
        got = _decode_full(encode_array(ref, bits_stored=12))
        return got is not None and np.array_equal(got.cpu().numpy().astype(np.uint16), ref)
    except Exception:  # no nvJPEG2000, no device memory, an API that moved: the CPU readers it is
        return False


def read_reduced(frame: bytes, r: int, *, bits: int, tiles: list[tuple[int, int, int, int]],
                 origin: tuple[int, int]) -> np.ndarray | None:
    """Level ``r`` of an unsigned reversible frame, decoded on the GPU; None when the GPU did not decode it."""
    try:
        full = _decode_full(frame)
        rows = max(t[2] for t in tiles) - origin[0]
        cols = max(t[3] for t in tiles) - origin[1]
        if full is None or tuple(full.shape) != (rows, cols):
            return None
        return low_band(full, r, tiles, origin, bits).cpu().numpy().astype(np.uint16)
    except MemoryError:
        raise
    except Exception:  # a decoder error on the GPU: the CPU readers decide what this frame is
        return None
