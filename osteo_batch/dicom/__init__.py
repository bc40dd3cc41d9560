"""DICOM reading, in the order a file meets it.

Opening (both stages): :mod:`.dataset` (``open_dataset``), with :mod:`.truncation`
(is the file complete?), :mod:`.inflate` (bounded deflate), :mod:`.limits` and
:mod:`.quiet` (pydicom silenced). The sweep: :mod:`.headers`. Scoring:
:mod:`.pixels` (the pipeline), :mod:`.frames` and :mod:`.codestreams` (what
reaches a decoder), :mod:`.decode`, :mod:`.display`. A refused file is a
:mod:`.rejections` error carrying its reason code.
"""
