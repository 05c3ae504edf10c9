"""Operating attached collections: status shows the attachment's health, reconcile repairs drift
between the app's table and the records, and a drop gives up rather than queue app writers."""

from __future__ import annotations

import psycopg
import pytest

from embedplat.api import Platform
from embedplat.db.connection import libpq_url
from embedplat.errors import CollectionBusyError, InvalidInputError


def _app_table(url: str, rows: int = 5) -> None:
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute("CREATE TABLE public.articles (id int PRIMARY KEY, title text, body text)")
        conn.execute(
            "INSERT INTO public.articles SELECT i, 'title ' || i, 'body of ' || i "
            "FROM generate_series(1, %s) i",
            (rows,),
        )


def _attach(platform: Platform, db_url: str) -> None:
    _app_table(db_url)
    platform.attach("arts", "public.articles", text_columns=["title", "body"], model="test-hash-64")


def test_status_shows_the_attachment(platform: Platform, db_url: str) -> None:
    _attach(platform, db_url)
    platform.ingest("plain", [{"id": "a", "text": "ingested"}])
    status = {s.name: s for s in platform.status()}
    arts = status["arts"].to_json()
    assert arts["attached_to"] == "articles"  # regclass text: public is on the search path
    assert arts["attachment_state"] == "ok" and arts["attachment_error"] is None
    assert status["plain"].attachment_state is None and status["plain"].attached_to is None
    with psycopg.connect(libpq_url(db_url), autocommit=True) as conn:
        conn.execute("ALTER TABLE public.articles RENAME COLUMN body TO content")
        conn.execute("UPDATE public.articles SET title = 'changed' WHERE id = 1")  # never fails
    arts = {s.name: s for s in platform.status()}["arts"]
    assert arts.attachment_state in ("columns_missing", "error")


def test_reconcile_repairs_drift_behind_disabled_triggers(platform: Platform, db_url: str) -> None:
    _attach(platform, db_url)
    with psycopg.connect(libpq_url(db_url), autocommit=True) as conn:
        conn.execute("ALTER TABLE public.articles DISABLE TRIGGER USER")
        conn.execute("INSERT INTO public.articles VALUES (6, 'new', 'row')")
        conn.execute("UPDATE public.articles SET body = 'edited' WHERE id = 2")
        conn.execute("DELETE FROM public.articles WHERE id = 3")
        conn.execute("ALTER TABLE public.articles ENABLE TRIGGER USER")
    report = platform.reconcile("arts")
    assert (
        report.attached_records_inserted,
        report.attached_records_updated,
        report.attached_records_deleted,
    ) == (1, 1, 1)
    with platform.connection() as conn:
        records = dict(
            conn.execute(
                "SELECT r.external_id, r.content FROM embedplat.records r "
                "JOIN embedplat.collections c ON c.id = r.collection_id WHERE c.name = 'arts'"
            ).fetchall()
        )
    assert sorted(records) == ["1", "2", "4", "5", "6"]
    assert "edited" in records["2"]
    # a second pass finds nothing
    again = platform.reconcile("arts")
    assert again.attached_records_inserted == again.attached_records_deleted == 0
    assert again.attached_records_updated == 0


def test_drop_gives_up_while_the_app_table_is_locked(platform: Platform, db_url: str) -> None:
    _attach(platform, db_url)
    with psycopg.connect(libpq_url(db_url)) as app:
        app.execute("LOCK TABLE public.articles IN ACCESS SHARE MODE")  # a long app transaction
        with pytest.raises(CollectionBusyError, match="could not be dropped"):
            platform.drop_collection("arts")
        app.rollback()
    platform.drop_collection("arts")  # once the app is done
    assert [c.name for c in platform.collections()] == []


def test_attach_refuses_an_unknown_model_for_a_new_collection(
    platform: Platform, db_url: str
) -> None:
    _app_table(db_url)
    with pytest.raises(InvalidInputError, match="no-such-model"):
        platform.attach("arts", "public.articles", text_columns=["title"], model="no-such-model")
    assert platform.collections() == [] and platform.attachments() == []
