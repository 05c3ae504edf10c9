"""The Typer app, its command groups, the exit rule and the one error decorator.

Exit status of every command (docs/cli.md, "Exit status"):

* ``0``: done;
* ``1``: the command ran and failed: one ``error: ...`` line on stderr;
* ``2``: the command line is wrong (unknown command or option, missing argument, a value of
  the wrong type or not among the choices, ``collection drop`` without ``--yes``): one
  ``error: ...`` line and a hint to ``--help`` on stderr;
* ``130``: interrupted (Ctrl-C): ``error: interrupted``;
* ``143``: terminated (SIGTERM): ``error: terminated``; like Ctrl-C it unwinds the command,
  so a sync hands its leases back before the process ends;
* ``141``: stdout was closed early (``embedplat export docs | head -1``): nothing printed,
  like any Unix tool ended by SIGPIPE.

A database error the library does not translate (the server shut down mid-command, a
constraint a race broke) is one ``error:`` line too, naming what failed, URL redacted.
``--debug`` shows the traceback of a failure instead of the one line.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar

import typer

# Typer vendors Click (typer >= 0.16); its usage errors and context live there.
from typer._click import exceptions as click_exceptions
from typer._click.globals import get_current_context
from typer._click.utils import PacifyFlushWrapper

from embedplat.cli.output import shown
from embedplat.config import Settings
from embedplat.errors import EmbedplatError

__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_PIPE_CLOSED",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "PROG_NAME",
    "Terminated",
    "app",
    "collection_app",
    "database_error_line",
    "db_app",
    "fail",
    "handle_errors",
    "main",
    "open_platform",
    "usage_error",
]

PROG_NAME = "embedplat"
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143, what a shell reports for `kill PID`
EXIT_PIPE_CLOSED = 128 + 13  # SIGPIPE, what a shell reports for `yes | head -1`


class Terminated(SystemExit):
    """Raised in the main thread by SIGTERM while a command runs.

    A SystemExit (with status 143), not an Exception: no ``except Exception`` on the way (a
    sync of all collections carries on past a failing one) swallows it, ``finally`` blocks
    still run, and psycopg cancels a query it interrupts (as for Ctrl-C), so the connection
    stays usable to hand the leases back. Uncaught, it still ends the process with 143.
    """

    def __init__(self) -> None:
        super().__init__(EXIT_TERMINATED)


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

    So do database errors the library left untranslated (:func:`database_error_line`), file
    errors it did not check first (OSError) and text that cannot be UTF-8. A closed stdout
    ends the command quietly (status 141); Ctrl-C prints ``error: interrupted`` (status 130),
    SIGTERM ``error: terminated`` (status 143). With ``--debug`` an error propagates with its
    traceback.
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
            except Terminated:
                if _debug():
                    raise
                fail("terminated", status=EXIT_TERMINATED)
            except UnicodeEncodeError as exc:
                # Text that cannot be UTF-8 (bytes of another encoding in a name, kept by
                # Python as lone surrogates) reaching the database driver or a stream.
                if _debug():
                    raise
                fail(f"{_command_path()}: text that is not valid UTF-8: {exc.reason}")
            except OSError as exc:
                # The system refused a file operation the library did not check first (a
                # folder given as an output file, a full disk): what and where, in one line.
                if _debug():
                    raise
                fail(f"{_command_path()}: {_os_error(exc)}")
            except Exception as exc:
                line = database_error_line(exc, _command_path())
                if line is None or _debug():
                    raise
                fail(line)

        return wrapper

    return decorator


def fail(message: str, *, status: int = EXIT_FAILURE) -> NoReturn:
    """Print ``error: MESSAGE`` (one line, non-printable characters escaped) on stderr and exit
    with ``status``."""
    typer.echo(f"error: {shown(_one_line(message))}", err=True)
    raise SystemExit(status)


def database_error_line(exc: BaseException, command: str) -> str | None:
    """The one line for a database error (psycopg's, or SQLAlchemy's around one), or None
    when ``exc`` is not one.

    An error of embedplat's SQL functions reads as the library's own error
    (:func:`embedplat.errors.from_server_error`); any other names the command, the kind of
    error and the server's first line, with the database URL and its password masked.
    """
    orig = _database_error(exc)
    if orig is None:
        return None
    from embedplat.errors import from_server_error, server_message

    known = from_server_error(orig)
    if known is not None:
        return _redacted(str(known))
    sqlstate = getattr(orig, "sqlstate", None)
    detail = server_message(orig).strip() or "no message"
    kind = type(orig).__name__
    if (sqlstate is None and kind == "OperationalError") or str(sqlstate)[:2] in ("08", "57"):
        # The connection itself failed, or the server ended it (shut down, restarted).
        what = "lost the database connection"
        detail += "; check that the server runs (`embedplat db status`) and run this again"
    else:
        what = f"database error {kind}" + (f" (SQLSTATE {sqlstate})" if sqlstate else "")
    return _redacted(f"{command}: {what}: {detail}")


def _database_error(exc: BaseException) -> BaseException | None:
    import psycopg  # here: only a failing command pays for the imports

    if isinstance(exc, psycopg.Error):
        return exc
    if "sqlalchemy" in sys.modules:  # SQLAlchemy wraps the driver's error (migrations)
        from sqlalchemy.exc import DBAPIError

        if isinstance(exc, DBAPIError):
            return exc.orig if isinstance(exc.orig, psycopg.Error) else exc
    return None


def _redacted(message: str) -> str:
    """``message`` with the configured database URL, and its password, masked."""
    url = os.environ.get("EMBEDPLAT_DATABASE_URL")
    if not url:
        return message
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    from embedplat.db.connection import SECRET_PARAMETERS, libpq_url, redact

    if url in message:
        message = message.replace(url, redact(url))
    try:
        params = conninfo_to_dict(libpq_url(url))
    except psycopg.ProgrammingError:  # not parseable: nothing to find in the message
        return message
    for key in SECRET_PARAMETERS:
        secret = str(params.get(key) or "")
        if secret:
            message = message.replace(secret, "***")
    return message


def usage_error(message: str) -> click_exceptions.UsageError:
    """An error of the running command's command line: exit status 2, hint to its --help."""
    return click_exceptions.UsageError(message, get_current_context(silent=True))


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: run the command line, apply the exit rule."""
    previous = _catch_sigterm()
    try:
        status = app(args=argv, prog_name=PROG_NAME, standalone_mode=False)
        sys.stdout.flush()
    except Terminated:  # outside a command (while starting up)
        fail("terminated", status=EXIT_TERMINATED)
    except KeyboardInterrupt:
        fail("interrupted", status=EXIT_INTERRUPTED)
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
        typer.echo(f"error: {shown(_one_line(exc.format_message()))}", err=True)
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
    finally:
        _restore_sigterm(previous)
    raise SystemExit(status if isinstance(status, int) else 0)


def open_platform() -> Any:
    """A connected :class:`~embedplat.api.Platform` (imported late: `--help` stays fast)."""
    from embedplat.api import Platform

    return Platform.connect(settings=Settings.from_env())


def _catch_sigterm() -> Any:
    """Make SIGTERM raise :class:`Terminated` in the main thread; the previous handler, or
    None where no handler can be set (not the main thread)."""
    try:
        return signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:
        return None


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Once: a second SIGTERM must not interrupt the clean-up the first one started (releasing
    # leases takes one statement); SIGKILL still ends the process at once.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()


def _restore_sigterm(previous: Any) -> None:
    if previous is not None:  # set by _catch_sigterm, so in the main thread
        signal.signal(signal.SIGTERM, previous)


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


def _os_error(exc: OSError) -> str:
    files = [str(f) for f in (exc.filename, exc.filename2) if f is not None]
    return (exc.strerror or str(exc)) + (f": {' -> '.join(files)}" if files else "")


def _command_path() -> str:
    """The running command's words (``collection drop``), for messages."""
    ctx = get_current_context(silent=True)
    if ctx is None:
        return PROG_NAME
    return ctx.command_path.removeprefix(PROG_NAME).strip() or PROG_NAME


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
