"""pydicom's reference image stored every way a syntax allows: one image, many encodings (shared by tests)."""

REFERENCE = "MR_small.dcm"  # explicit VR little endian, signed 16-bit
TWINS = [
    "MR_small_implicit.dcm",  # implicit VR little endian
    "MR_small_bigendian.dcm",  # explicit VR big endian
    "MR_small_expb.dcm",
    "MR_small_RLE.dcm",  # RLE lossless
    "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless
]
