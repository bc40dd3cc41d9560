"""DICOM reading: headers for the sweep, selection rules, and the pixel pipeline."""
