#!/usr/bin/env bash
# Install everything into .venv (created here if missing) and run every check:
#   library/notebook sync (nbdev_export must not change aair_nb/), nbdev_test on all notebooks,
#   the documentation build, then pytest on tests/ (which includes the headless-browser test of the site).
# Exits non-zero on any failure; pytest's summary line is the last thing printed.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 NO_MKDOCS_2_WARNING=1 MPLBACKEND=Agg
step() { printf '\n== %s (%s) ==\n' "$1" "$(date +%T)"; }
t0=$(date +%s)

step "install"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip setuptools wheel 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -m pip install -q -e ".[dev,small,medium,serve]" 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -c "import aair_nb, torch, torchvision, transformers, nbdev" || { echo "install failed"; exit 1; }
if ! command -v chromium >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
fi
echo "install took $(( $(date +%s) - t0 )) s; .venv is $(du -sh .venv | cut -f1)"

step "library in sync with notebooks"
.venv/bin/nbdev_export
if [ -n "$(git status --porcelain -- aair_nb)" ]; then
  echo "nbdev_export changed aair_nb/: the library does not match the notebooks:"; git status --short -- aair_nb; exit 1
fi

step "notebook tests (nbdev_test)"
t1=$(date +%s)
.venv/bin/nbdev_test --n_workers 2 --timing
echo "nbdev_test took $(( $(date +%s) - t1 )) s"

step "docs build"
t2=$(date +%s)
.venv/bin/python scripts/build_docs.py
echo "docs build took $(( $(date +%s) - t2 )) s"

step "pytest (library tests, README sync, site in a browser)"
.venv/bin/python -m pytest tests -q -p no:cacheprovider
