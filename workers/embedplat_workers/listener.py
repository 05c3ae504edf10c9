"""The change listener: PostgreSQL ``NOTIFY`` → a prompt, debounced sync task.

Migration 0003 installs triggers on ``embedplat.records`` that send ``NOTIFY embedplat_changes``
with the collection id whenever records are inserted or their content changes. This listener
``LISTEN``\\ s on that channel, gathers notifications until writes pause for
``EMBEDPLAT_NOTIFY_DEBOUNCE_SECONDS`` (0.5 s; at most 2 s during a steady stream of writes),
and then sends one ``embedplat.sync_collection`` task per collection touched. A change is thus
searchable within about a second plus the embedding time, without polling the database hard.

It runs inside the beat process (default), or on its own::

    python -m embedplat_workers.listener

Notifications are not stored: while the listener is disconnected they are lost. So after every
(re)connect it sends one sweep task, which picks up whatever changed meanwhile, and beat's
periodic sweep remains the fallback for everything else. Two listeners by mistake only send
each task twice, which costs a no-op task (the database hands out the work).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import psycopg

from embedplat.db.connection import connect, resolve_database_url
from embedplat.errors import DatabaseUnavailableError
from embedplat_workers.beat import SWEEP_TASK, SYNC_TASK
from embedplat_workers.settings import WorkerSettings

log = logging.getLogger(__name__)

CHANNEL = "embedplat_changes"
# How often the loop wakes up when idle: to notice a stop request, and to ping the server so a
# connection that died silently (network partition) is noticed within a minute.
IDLE_WAKE_S = 1.0
PING_EVERY_S = 30.0
RECONNECT_MIN_S = 0.5
RECONNECT_MAX_S = 10.0

SendSync = Callable[[Iterable[str]], None]


class ChangeListener:
    """LISTEN on ``embedplat_changes`` and dispatch debounced sync requests.

    ``send_sync`` receives collection names; ``on_connect`` runs after every (re)connect (to
    catch up on notifications missed while disconnected). Both are called from the thread that
    runs :meth:`run`.
    """

    def __init__(
        self,
        database_url: str,
        send_sync: SendSync,
        *,
        debounce_s: float = 0.5,
        max_wait_s: float = 2.0,
        on_connect: Callable[[], None] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.database_url = database_url
        self.send_sync = send_sync
        self.debounce_s = debounce_s
        self.max_wait_s = max(max_wait_s, debounce_s)
        self.on_connect = on_connect
        self.stop = stop or threading.Event()
        self._names: dict[int, str] = {}
        self._delay = RECONNECT_MIN_S

    def run(self) -> None:
        """Listen until :attr:`stop` is set, reconnecting after losing the database."""
        while not self.stop.is_set():
            try:
                self._listen()
            except (psycopg.OperationalError, DatabaseUnavailableError) as exc:
                text = str(exc).strip()
                log.warning(
                    "change listener lost the database (%s); reconnecting in %.1fs",
                    text.splitlines()[-1] if text else type(exc).__name__,
                    self._delay,
                )
            except Exception:  # keep listening whatever went wrong; the sweep covers the gap
                log.exception("change listener failed; restarting in %.1fs", self._delay)
            else:
                continue
            self.stop.wait(self._delay)
            self._delay = min(self._delay * 2, RECONNECT_MAX_S)

    def _listen(self) -> None:
        with connect(self.database_url, autocommit=True) as conn:
            conn.execute(f"LISTEN {CHANNEL}")
            log.info("change listener: listening on %s", CHANNEL)
            self._delay = RECONNECT_MIN_S
            if self.on_connect is not None:
                self._safely(self.on_connect)
            pending: set[int] = set()
            first = last = 0.0
            last_contact = time.monotonic()
            while not self.stop.is_set():
                now = time.monotonic()
                if pending:
                    deadline = min(first + self.max_wait_s, last + self.debounce_s)
                    timeout = max(0.0, deadline - now)
                else:
                    timeout = IDLE_WAKE_S
                # list(): the generator holds the connection's lock until exhausted.
                received = list(conn.notifies(timeout=timeout, stop_after=1))
                now = time.monotonic()
                if received:
                    last_contact = now
                for notify in received:
                    try:
                        collection_id = int(notify.payload)
                    except ValueError:
                        log.warning("ignoring notification with payload %r", notify.payload)
                        continue
                    if not pending:
                        first = now
                    pending.add(collection_id)
                    last = now
                if pending and now >= min(first + self.max_wait_s, last + self.debounce_s):
                    if self._dispatch(conn, pending):
                        pending = set()
                    else:  # broker trouble: keep them, try again after another debounce
                        first = last = now
                if now - last_contact >= PING_EVERY_S:
                    conn.execute("SELECT 1")
                    last_contact = now

    def _dispatch(self, conn: psycopg.Connection[Any], collection_ids: set[int]) -> bool:
        """Send sync tasks for ``collection_ids``; False if sending failed."""
        unknown = [cid for cid in collection_ids if cid not in self._names]
        if unknown:
            for cid, name in conn.execute(
                "SELECT id, name FROM embedplat.collections WHERE id = ANY(%s)", (unknown,)
            ):
                self._names[int(cid)] = str(name)
        names = sorted({self._names[cid] for cid in collection_ids if cid in self._names})
        if not names:
            return True
        return self._safely(lambda: self.send_sync(names))

    @staticmethod
    def _safely(action: Callable[[], None]) -> bool:
        try:
            action()
        except Exception as exc:  # the broker's failure modes are open-ended
            log.warning("change listener could not send tasks: %s", exc)
            return False
        return True


def celery_senders(app: Any) -> tuple[SendSync, Callable[[], None]]:
    """(send sync tasks for names, send one sweep) through the Celery ``app``."""

    def send_sync(names: Iterable[str]) -> None:
        for name in names:
            app.send_task(SYNC_TASK, args=[name])
            log.info("change listener: sent sync task for %r", name)

    def send_sweep() -> None:
        app.send_task(SWEEP_TASK)

    return send_sync, send_sweep


def build_listener(
    app: Any, settings: WorkerSettings, stop: threading.Event | None = None
) -> ChangeListener:
    """A listener for ``app``'s broker and the configured database."""
    send_sync, send_sweep = celery_senders(app)
    return ChangeListener(
        resolve_database_url(settings.base),
        send_sync,
        debounce_s=settings.notify_debounce_s,
        max_wait_s=settings.notify_max_wait_s,
        on_connect=send_sweep,
        stop=stop,
    )


def start_listener_thread(app: Any, settings: WorkerSettings) -> threading.Thread:
    """Run the listener in a daemon thread of this process (used by the beat process)."""
    listener = build_listener(app, settings)
    thread = threading.Thread(target=listener.run, name="embedplat-change-listener", daemon=True)
    thread.start()
    return thread


def main() -> None:
    """``python -m embedplat_workers.listener``: run the listener until SIGTERM/SIGINT."""
    from embedplat_workers.app import app, worker_settings

    logging.basicConfig(
        level=logging.INFO, format="[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"
    )
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        log.info("change listener: stopping (signal %d)", signum)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    build_listener(app, worker_settings, stop).run()


if __name__ == "__main__":
    main()
