# Sourced by the other scripts: create (or reuse) .venv and install embedplat into it.
# torch is pinned to the CPU build first, so that sentence-transformers does not pull a
# multi-GB CUDA build.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="${EMBEDPLAT_VENV:-$ROOT/.venv}"
EXTRAS="${1:-model}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install --quiet --upgrade pip
python -m pip install --quiet "torch==2.13.0"
python -m pip install --quiet -e "$ROOT[$EXTRAS]"
