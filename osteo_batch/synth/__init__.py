"""Synthetic women, not people: phantom chest radiographs with a known bone density, for the demo and the tests.

:mod:`.plan` (who, which visits, which DXA), :mod:`.density` (latent bone
density, T-scores, the known ceiling AUC), :mod:`.phantom` (one radiograph
with its bone and marker masks), :mod:`.noise`, :mod:`.cohort` (the archive on
disk), :mod:`.demo` (the demo's history, its fine-tune, tonight's figures).
"""
