"""`embedplat model list | add | remove | switch | bench`: the models the platform knows, local
folders registered by name, switching a collection's model, and backends measured here
(docs/models.md)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from embedplat.cli.app import app, handle_errors, open_platform, usage_error
from embedplat.cli.options import BackendChoice, BackendOption, JsonFlag, storable_text
from embedplat.cli.output import print_json, shown
from embedplat.config import Settings
from embedplat.embedders.backends import model_variant
from embedplat.model_bench import DEFAULT_RUNS, bench_model
from embedplat.models import require_model

if TYPE_CHECKING:
    from embedplat.models import ModelInfo

model_app = typer.Typer(
    help="List embedding models and register local model folders by name.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(model_app, name="model")

ModelNameArg = Annotated[
    str,
    typer.Argument(metavar="NAME", help="The model's registered name.", callback=storable_text),
]


@model_app.command("list")
@handle_errors()
def model_list(
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Load each model to be sure it works (seconds per model; all-mpnet-base-v2 is "
            "extracted on first use).",
        ),
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """List the models the platform knows: bundled, extra, registered, and those collections use.

    Nothing is loaded unless --check: dimensions, sequence length and prompts come from the
    models' config files, and a registered folder is hashed to compare it with its registered
    fingerprint.
    """
    with open_platform() as platform:
        infos = platform.models(check=check)
    if json_out:
        print_json({"models": [info.to_json() for info in infos]})
        return
    for info in infos:
        _print_model(info)


def _print_model(info: ModelInfo) -> None:
    fields = [
        shown(info.name),
        info.source or "unknown",
        f"dimensions={_or_unknown(info.dimensions)}",
        f"max_seq_length={_or_unknown(info.max_seq_length)}",
        f"fingerprint={(info.fingerprint or '?')[:12]}",
        f"backend={info.backend}",
        "loads" if info.loads else "does not load",
    ]
    if info.collections:
        fields.append(
            "collections=" + ",".join(_use(u.collection, u.active) for u in info.collections)
        )
    typer.echo("\t".join(fields))
    if info.prompts:
        prompts = ", ".join(f"{shown(k)}={shown(repr(v))}" for k, v in info.prompts.items())
        typer.echo(f"  prompts: {prompts}")
    if info.problem:
        typer.echo(f"  why: {shown(info.problem)}")
    stale = [u.collection for u in info.collections if u.matches is False]
    if stale:
        typer.echo(
            f"  note: {', '.join(shown(c) for c in stale)} hold vectors of another fingerprint "
            "of this name; their syncs and searches are refused until the files match"
        )


def _use(collection: str, active: bool) -> str:
    return shown(collection) + ("*" if active else "")


def _or_unknown(value: int | None) -> str:
    return "?" if value is None else str(value)


@model_app.command("add")
@handle_errors()
def model_add(
    name: ModelNameArg,
    path: Annotated[
        Path | None,
        typer.Option(
            "--path",
            help="The model's folder (sentence-transformers: modules.json; or transformers: "
            "config.json), at the same path on every machine that embeds with it. Required.",
        ),
    ] = None,
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="Point a registered name at another folder (refused while a collection holds "
            "vectors of the old files).",
        ),
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Register a local model folder under NAME; collections can then use --model NAME."""
    if path is None:
        Settings.from_env()  # a bad setting is reported first, as by every command
        raise usage_error("Missing option '--path': give the model's folder")
    with open_platform() as platform:
        added = platform.add_model(name, path, replace=replace)
    if json_out:
        print_json(added.to_json())
        return
    registered = added.registration
    verb = {"added": "registered", "replaced": "re-registered", "unchanged": "already registered"}
    typer.echo(
        f"{verb[added.outcome]} model {registered.name!r}: {shown(registered.path)} "
        f"({registered.dimensions} dimensions, fingerprint {registered.fingerprint[:12]})"
    )


@model_app.command("remove")
@handle_errors()
def model_remove(name: ModelNameArg, json_out: JsonFlag = False) -> None:
    """Forget the registration of NAME (refused while a collection uses it)."""
    with open_platform() as platform:
        removed = platform.remove_model(name)
    if json_out:
        print_json({"name": name, "removed": removed})
    elif removed:
        typer.echo(f"removed model {name!r}")
    else:
        typer.echo(f"model {name!r} was not registered")


@model_app.command("switch")
@handle_errors()
def model_switch(
    collection: Annotated[
        str,
        typer.Argument(
            metavar="COLLECTION", help="The collection to switch.", callback=storable_text
        ),
    ],
    model: Annotated[
        str | None,
        typer.Argument(
            metavar="NEW_MODEL",
            help="The model to switch to (a bundled, extra or registered name, or a folder).",
        ),
    ] = None,
    keep_old: Annotated[
        bool,
        typer.Option(
            "--keep-old",
            help="Keep the current model's vectors after the swap, for a rollback with --reuse.",
        ),
    ] = False,
    reuse: Annotated[
        bool,
        typer.Option(
            "--reuse",
            help="Switch back to a model whose vectors a --keep-old switch kept: only chunks "
            "changed since are embedded (refused when none are kept).",
        ),
    ] = False,
    cancel: Annotated[
        bool,
        typer.Option("--cancel", help="Abandon the switch in progress and delete its vectors."),
    ] = False,
    backend: BackendOption = None,
    json_out: JsonFlag = False,
) -> None:
    """Switch COLLECTION to NEW_MODEL with no downtime.

    Every chunk is back-filled with the new model by `embedplat sync` and the workers, next to
    their normal work (edits first), while searches keep using the current model. The sync
    that completes the back-fill builds the new model's ANN index and swaps in one
    transaction; the old vectors are deleted after a short grace period unless --keep-old.
    Progress: `embedplat status`.
    """
    if cancel:
        if model is not None or keep_old or reuse or backend is not None:
            raise usage_error("--cancel takes only the collection")
        with open_platform() as platform:
            cancelled = platform.cancel_switch(collection)
        if json_out:
            print_json(cancelled.to_json())
            return
        typer.echo(
            f"cancelled the switch of {shown(cancelled.collection)} to {shown(cancelled.model)}: "
            f"{cancelled.vectors_deleted:,} vectors and {cancelled.queued_deleted:,} queued "
            "chunks deleted"
        )
        return
    if model is None:
        Settings.from_env()
        raise usage_error("Missing argument 'NEW_MODEL' (or pass --cancel)")
    with open_platform() as platform:
        started = platform.switch_model(
            collection,
            model,
            keep_old=keep_old,
            reuse=reuse,
            backend=backend.value if backend is not None else None,
        )
    if json_out:
        print_json(started.to_json())
        return
    name, target = shown(started.collection), shown(started.to_model)
    if started.state == "switched":
        typer.echo(f"{name} uses {target} now ({started.chunks_reused:,} vectors reused)")
        return
    verb = "resumed" if started.state == "resumed" else "started"
    typer.echo(
        f"{verb} the switch of {name} from {shown(started.from_model)} to {target}: "
        f"{started.chunks_queued:,} of {started.chunks:,} chunks queued "
        f"({started.chunks_reused:,} reused); `embedplat sync {name}` or the workers back-fill "
        "them, searches use the current model until the swap (progress: `embedplat status`)"
    )


@model_app.command("bench")
@handle_errors()
def model_bench(
    model: Annotated[
        str,
        typer.Argument(
            metavar="NAME",
            help="The model (a bundled, extra or registered name, or a folder).",
            callback=storable_text,
        ),
    ],
    backends: Annotated[
        list[BackendChoice] | None,
        typer.Option(
            "--backend",
            help="A backend to measure (repeat for several); default: every backend whose "
            "runtime is installed. torch is always measured: the cosines compare with it.",
            show_default=False,
        ),
    ] = None,
    runs: Annotated[
        int, typer.Option(min=1, max=20, help="Timed runs per backend, in turns.")
    ] = DEFAULT_RUNS,
    json_out: JsonFlag = False,
) -> None:
    """Measure NAME on each backend here: texts/s on the built-in sample, and the cosine of
    each variant's vectors to the torch (fp32) ones. The first use of a backend exports the
    model (cached under EMBEDPLAT_HOME/exports; its time is in load_seconds)."""
    import sys

    def progress(message: str) -> None:
        if not json_out and sys.stderr.isatty():
            typer.echo(f"… {message}", err=True)

    with open_platform() as platform:
        with platform.connection() as conn:
            require_model(conn, model_variant(model).base)
        report = bench_model(
            model,
            platform.embedder,
            backends=[b.value for b in backends] if backends else None,
            runs=runs,
            progress=progress,
        )
    if json_out:
        print_json(report.to_json())
        return
    typer.echo(f"{shown(report.model)}: {report.texts} texts, {report.runs} runs per backend")
    for bench in report.backends:
        if bench.problem is not None:
            typer.echo(f"{bench.backend}\tnot measured: {shown(bench.problem)}")
            continue
        rates = sorted(bench.texts_per_second)
        speedup = report.speedup(bench)
        typer.echo(
            f"{bench.backend}\ttexts/s {rates[0]:,.0f} / {rates[len(rates) // 2]:,.0f} / "
            f"{rates[-1]:,.0f} (min / median / max)\t{speedup:.2f}x torch\t"
            f"cosine to torch median {bench.cosine_median:.4f}, 1st percentile "
            f"{bench.cosine_p1:.4f}\tload {bench.load_seconds:.1f} s"
        )
