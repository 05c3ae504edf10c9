"""`embedplat worker`: a Celery worker for embedplat's tasks (needs the `workers` extra)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from embedplat.cli.app import app, handle_errors
from embedplat.config import THREADS_VARIABLE, Settings
from embedplat.embedders.runtime import default_threads
from embedplat.errors import ConfigurationError, InvalidInputError

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@app.command()
@handle_errors()
def worker(
    concurrency: Annotated[
        int | None,
        typer.Option(help="Worker processes (default: one per CPU core)."),
    ] = None,
    beat: Annotated[
        bool,
        typer.Option(
            "--beat",
            help="Also run the scheduler (sweep, reconcile, index upkeep) and the change "
            "listener in this worker. Run exactly one per deployment.",
        ),
    ] = False,
    loglevel: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
) -> None:
    """Run a Celery worker for embedplat's tasks (same as `celery -A embedplat_workers.app worker`).

    Unless EMBEDPLAT_THREADS is set, each worker process's ONNX Runtime / OpenVINO backend gets
    an equal share of the CPUs (one thread per process by default).

    Broker from EMBEDPLAT_BROKER_URL; database from EMBEDPLAT_DATABASE_URL, else the embedded
    server. Needs Celery, which comes with the `workers` extra of embedplat.
    """
    current = Settings.from_env()  # a bad EMBEDPLAT_* value fails here, before Celery starts
    if concurrency is not None and concurrency < 1:
        raise InvalidInputError("--concurrency must be at least 1")
    if loglevel.upper() not in LOG_LEVELS:
        raise InvalidInputError(
            f"--loglevel must be DEBUG, INFO, WARNING or ERROR, got {loglevel!r}"
        )
    # Celery is imported here only: `embedplat` itself never depends on it.
    try:
        from embedplat_workers.app import app as celery_app
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in ("celery", "kombu", "redis", "embedplat_workers"):
            raise ConfigurationError(
                f"the worker needs Celery ({exc.name} is missing): pip install 'embedplat[workers]'"
            ) from None
        raise
    # The ONNX Runtime / OpenVINO backends' threads: the process's CPUs shared among the
    # worker processes (Celery's default is one process per CPU), unless set.
    if not os.environ.get(THREADS_VARIABLE, "").strip():
        cpus = default_threads()
        os.environ[THREADS_VARIABLE] = str(max(1, cpus // (concurrency or cpus)))
    argv = ["worker", f"--loglevel={loglevel.upper()}"]
    if concurrency is not None:
        argv.append(f"--concurrency={concurrency}")
    if beat:
        home = current.home
        home.mkdir(parents=True, exist_ok=True)
        argv += ["--beat", f"--schedule={home / 'celerybeat-schedule'}"]
    celery_app.worker_main(argv)
