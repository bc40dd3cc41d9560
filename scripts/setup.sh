#!/usr/bin/env bash
# Set up osteo-batch on a fresh Debian/Ubuntu machine: system packages, then a
# virtual environment at .venv with the project and its test tools.
# Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

# Chromium opens the worklists (and runs the browser tests); CJK fonts make
# Korean, Japanese and Chinese patient names render as glyphs, not boxes.
need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
fc-list : family 2>/dev/null | grep -i "Noto Sans CJK" >/dev/null || need_apt+=(fonts-noto-cjk)  # no -q: SIGPIPE + pipefail
ldconfig -p 2>/dev/null | grep "libopenjp2.so" >/dev/null || need_apt+=(libopenjp2-7)  # reduced-resolution JPEG 2000 (glymur)
# A real PACS for the tests (Orthanc with its DICOMweb plugin), DICOM network tools, and the IOD
# validator every DICOM object we write is checked with (dciodvfy).
command -v Orthanc >/dev/null 2>&1 || need_apt+=(orthanc)
[ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || need_apt+=(orthanc-dicomweb)
command -v storescu >/dev/null 2>&1 || need_apt+=(dcmtk)
command -v dciodvfy >/dev/null 2>&1 || need_apt+=(dicom3tools)
command -v ojph_compress >/dev/null 2>&1 || need_apt+=(openjph-tools)  # writes the HTJ2K test files
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${need_apt[*]} (apt)" >&2
  $sudo apt-get install -y -q --no-install-recommends "${need_apt[@]}" >/dev/null 2>&1 || {
    $sudo apt-get update -q >/dev/null
    $sudo apt-get install -y -q --no-install-recommends "${need_apt[@]}" >/dev/null
  }
fi

# torch and torchvision are pinned together in pyproject.toml; plain pip (not
# uv) honours the machine's pip configuration and local wheels.
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import osteo_batch.flows, pytest, playwright" >/dev/null 2>&1 \
   || [ pyproject.toml -nt .venv/.osteo-installed ]; then
  echo "setup: installing osteo-batch and its dependencies into .venv (a few minutes the first time)" >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
  touch .venv/.osteo-installed
fi
