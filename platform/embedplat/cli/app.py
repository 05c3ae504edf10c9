"""The Typer app, its command groups, the exit rule and the one error decorator.

Exit status of every command (docs/cli.md, "Exit status"):

* ``0``: done;
* ``1``: the command ran and failed: one ``error: ...`` line on stderr;
* ``2``: the command line is wrong (unknown command or option, missing argument, a value of
  the wrong type or not among the choices, ``collection drop`` without ``--yes``): one
  ``error: ...`` line and a hint to ``--help`` on stderr;
* ``130``: interrupted (Ctrl-C): ``error: interrupted``;
* ``141``: stdout was closed early (``embedplat export docs | head -1``): nothing printed,
  like any Unix tool ended by SIGPIPE.

``--debug`` shows the traceback of a failure instead of the one line.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar

import typer

# Typer vendors Click (typer >= 0.16); its usage errors and context live there.
from typer._click import exceptions as click_exceptions
from typer._click.globals import get_current_context
from typer._click.utils import PacifyFlushWrapper

from embedplat.config import Settings
from embedplat.errors import ConfigurationError, EmbedplatError

__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_PIPE_CLOSED",
    "EXIT_USAGE",
    "PROG_NAME",
    "app",
    "collection_app",
    "db_app",
    "fail",
    "handle_errors",
    "main",
    "open_platform",
    "settings",
    "usage_error",
]

PROG_NAME = "embedplat"
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_PIPE_CLOSED = 128 + 13  # SIGPIPE, what a shell reports for `yes | head -1`


app = typer.Typer(
    name=PROG_NAME,
    help="Keep embeddings inside PostgreSQL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Room for each command's first docstring line in `embedplat --help`.
    context_settings={"max_content_width": 120},
    # Plain Click help: flags without a `<bool>` type column, no boxes around errors.
    rich_markup_mode=None,
)
db_app = typer.Typer(
    help="Manage the embedded PostgreSQL server.", no_args_is_help=True, rich_markup_mode=None
)
collection_app = typer.Typer(
    help="Create, list and drop collections.", no_args_is_help=True, rich_markup_mode=None
)

_QUIET = logging.NullHandler()
_DEVICE_HELP = "cpu, cuda, cuda:N (N a GPU number) or mps"


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the traceback of a failure.")
    ] = False,
) -> None:
    """Keep embeddings inside PostgreSQL."""
    if debug:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    else:
        # The library's warnings (a collection that failed in a sync of all) would reach
        # stderr through logging's last-resort handler; the commands report them in their own
        # output and exit status. Handlers of the root logger (Celery's) still receive them.
        logging.getLogger("embedplat").addHandler(_QUIET)


P = ParamSpec("P")
R = TypeVar("R")


def handle_errors() -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a command: embedplat errors become one ``error:`` line and exit status 1.

    A closed stdout ends the command quietly (status 141); Ctrl-C prints ``error: interrupted``
    (status 130). With ``--debug`` an error propagates with its traceback.
    """

    def decorator(command: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(command)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                result = command(*args, **kwargs)
                # Flush here, so a closed pipe is noticed while this handler still runs.
                sys.stdout.flush()
                return result
            except BrokenPipeError:
                _pipe_closed()
            except EmbedplatError as exc:
                if _debug():
                    raise
                fail(str(exc))
            except KeyboardInterrupt:
                if _debug():
                    raise
                fail("interrupted", status=EXIT_INTERRUPTED)

        return wrapper

    return decorator


def fail(message: str, *, status: int = EXIT_FAILURE) -> NoReturn:
    """Print ``error: MESSAGE`` (one line) on stderr and exit with ``status``."""
    typer.echo(f"error: {_one_line(message)}", err=True)
    raise SystemExit(status)


def usage_error(message: str) -> click_exceptions.UsageError:
    """An error of the running command's command line: exit status 2, hint to its --help."""
    return click_exceptions.UsageError(message, get_current_context(silent=True))


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: run the command line, apply the exit rule."""
    try:
        status = app(args=argv, prog_name=PROG_NAME, standalone_mode=False)
        sys.stdout.flush()
    except BrokenPipeError:
        _pipe_closed()
    except SystemExit:
        # Typer ends a closed pipe outside any command (`--help | head -1`) with status 1 after
        # wrapping stdout; give it the closed-pipe status of every other command.
        if isinstance(sys.stdout, PacifyFlushWrapper):
            _pipe_closed()
        raise
    except click_exceptions.NoArgsIsHelpError as exc:
        # A group without its command (`embedplat`, `embedplat db`): its help, as a usage error.
        typer.echo(exc.format_message(), err=True)
        raise SystemExit(EXIT_USAGE) from None
    except click_exceptions.UsageError as exc:
        typer.echo(f"error: {_one_line(exc.format_message())}", err=True)
        if exc.ctx is not None:
            typer.echo(f"Try '{exc.ctx.command_path} --help' for help.", err=True)
        raise SystemExit(EXIT_USAGE) from None
    except click_exceptions.ClickException as exc:
        fail(exc.format_message(), status=exc.exit_code or EXIT_FAILURE)
    except typer.Abort:
        fail("aborted")
    except EmbedplatError as exc:  # raised outside a command (a callback), or with --debug
        if _debug_argv(argv):
            raise
        fail(str(exc))
    raise SystemExit(status if isinstance(status, int) else 0)


def settings() -> Settings:
    """Settings from the environment, checked where the library would only fail later."""
    result = Settings.from_env()
    if result.device is not None and not _valid_device(result.device):
        # Checked before any model loads: otherwise torch's error surfaces as "cannot load
        # embedding model", which hides the variable at fault.
        raise ConfigurationError(
            f"EMBEDPLAT_DEVICE must be {_DEVICE_HELP}, got {result.device!r}; "
            "unset it to choose automatically"
        )
    return result


def open_platform() -> Any:
    """A connected :class:`~embedplat.api.Platform` (imported late: `--help` stays fast)."""
    from embedplat.api import Platform

    return Platform.connect(settings=settings())


def _valid_device(device: str) -> bool:
    if device in ("cpu", "cuda", "mps"):
        return True
    prefix, _, number = device.partition(":")
    return prefix == "cuda" and number.isdigit()


def _pipe_closed() -> NoReturn:
    # Point stdout at /dev/null so the interpreter's final flush cannot fail a second time.
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    finally:
        os.close(devnull)
    raise SystemExit(EXIT_PIPE_CLOSED)


def _debug() -> bool:
    ctx = get_current_context(silent=True)
    return bool(ctx is not None and ctx.find_root().params.get("debug"))


def _debug_argv(argv: Sequence[str] | None) -> bool:
    return "--debug" in (sys.argv[1:] if argv is None else argv)


def _one_line(message: str) -> str:
    # The rule is one line: a message with line breaks is joined, not cut.
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


app.add_typer(db_app, name="db")
app.add_typer(collection_app, name="collection")
