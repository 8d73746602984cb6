#!/usr/bin/env bash
# Idempotent setup: Debian packages, then .venv with the pinned stack. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

# g++: torch.compile's CPU backend (inductor) builds C++ kernels (the compiled-rollout test)
APT_PKGS=(espeak-ng sox ffmpeg fonts-noto-cjk chromium chromium-driver g++)
missing=()
for p in "${APT_PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[setup] apt-get install ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PY" -m venv .venv
fi
# Reinstall only when the dependency spec changed.
stamp=.venv/.avcot-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing avcot[dev] into .venv (first run downloads several GB)"
  # The stack is ~8 GB in .venv; pip's wheel cache would hold a second copy.
  # CI once failed with 'No space left on device' mid-install, so skip the
  # cache and say up front when the disk is too small to finish.
  free_kb=$(df -Pk . | awk 'NR==2 {print $4}')
  if [ "${free_kb:-0}" -lt $((10 * 1024 * 1024)) ]; then
    echo "[setup] warning: only $((free_kb / 1024)) MB free here; the install needs about 10 GB" >&2
  fi
  export PIP_NO_CACHE_DIR=1
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[dev]"
  echo "$want" > "$stamp"
fi
echo "[setup] ok: $(.venv/bin/python -c 'import torch, transformers, lightning; print("torch", torch.__version__, "transformers", transformers.__version__, "lightning", lightning.__version__)')"
