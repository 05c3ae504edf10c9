# Sourced by the other scripts: create (or reuse) .venv and install embedplat into it.
#
# torch is installed first, pinned, and as the CPU build from PyTorch's CPU wheel index: from
# the default index (PyPI) pip takes the multi-GB CUDA build on Linux, which sentence-transformers
# would otherwise pull in. Where that index cannot be reached (an offline mirror, a firewall),
# a quick probe (5 s, no retries) notices and torch comes from pip's configured index instead.
#
#   EMBEDPLAT_VENV         the virtual environment (default: .venv in the repository)
#   EMBEDPLAT_TORCH_INDEX  the torch wheel index (default: PyTorch's CPU index; PyTorch's
#                          index for the machine's CUDA version for GPU workers)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="${EMBEDPLAT_VENV:-$ROOT/.venv}"
EXTRAS="${1:-model}"
TORCH_VERSION="2.13.0"
TORCH_INDEX="${EMBEDPLAT_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install --quiet --upgrade pip

# The wanted torch is already there (e.g. a rerun of scripts/test): no network needed.
_embedplat_torch_installed() {
    python - "$TORCH_VERSION" <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version

try:
    installed = version("torch")
except PackageNotFoundError:
    sys.exit(1)
# Local version labels (+cpu, +cu128) name the build; the release must match.
sys.exit(0 if installed.split("+")[0] == sys.argv[1] else 1)
PY
}

# Can the torch index be reached? Short timeout and no retries, so an unreachable index costs
# seconds, not pip's minutes of retries. The proxy variables pip reads are honoured.
_embedplat_torch_index_reachable() {
    python - "$TORCH_INDEX" <<'PY'
import os
import sys
import urllib.request

url = sys.argv[1].rstrip("/") + "/torch/"
proxy = os.environ.get("PIP_PROXY")
handlers = [urllib.request.ProxyHandler({"http": proxy, "https": proxy})] if proxy else []
try:
    # GET, not HEAD: some mirrors refuse HEAD. Only the headers are read.
    urllib.request.build_opener(*handlers).open(url, timeout=5).close()
except Exception:
    sys.exit(1)
PY
}

if ! _embedplat_torch_installed; then
    if _embedplat_torch_index_reachable; then
        python -m pip install --quiet --index-url "$TORCH_INDEX" "torch==$TORCH_VERSION"
    else
        echo "note: $TORCH_INDEX cannot be reached; installing torch==$TORCH_VERSION from" \
            "pip's configured index (on Linux, PyPI's build is the large CUDA one)" >&2
        python -m pip install --quiet "torch==$TORCH_VERSION"
    fi
fi
unset -f _embedplat_torch_installed _embedplat_torch_index_reachable
python -m pip install --quiet -e "$ROOT[$EXTRAS]"
