"""The archive as a PACS: DICOMweb (QIDO-RS, WADO-RS, STOW-RS) or DIMSE (C-FIND, C-GET, C-STORE).

A PACS is a second source of instances beside the folder walk, not a second
pipeline: the sweep indexes what the PACS lists into the same ``instances``
table, and scoring reads retrieved files from a bounded spool.
"""
