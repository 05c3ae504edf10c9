"""An attached table used as an app would: writes through a SQLAlchemy session with the app's
own declarative model; search, similar and near-duplicates on the attached collection; results
joined back to the app's rows from SQLAlchemy and from plain SQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Integer, String, Text, cast, create_engine, pool, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from embedplat.api import Platform
from embedplat.attach import external_id_of
from embedplat.db.connection import sqlalchemy_url
from embedplat.errors import InvalidInputError
from embedplat.orm import search_fn, similar_fn
from tests.fix_embedders import HashEmbedder

from .search_helpers import hash_sync


class AppBase(DeclarativeBase):
    """The app's own declarative base (public schema), unrelated to embedplat's."""


class Article(AppBase):
    __tablename__ = "articles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    author: Mapped[str | None] = mapped_column(String(100))
    views: Mapped[int] = mapped_column(Integer, default=0)


@pytest.fixture
def session(db_url: str) -> Iterator[Session]:
    engine = create_engine(sqlalchemy_url(db_url), poolclass=pool.NullPool)
    AppBase.metadata.create_all(engine)
    with Session(engine) as s:
        yield s
    engine.dispose()


def _query(text: str) -> list[float]:
    return [float(x) for x in HashEmbedder(64).embed([text])[0]]


def test_app_writes_through_a_session_and_joins_results_back(
    session: Session, platform: Platform, db_url: str
) -> None:
    session.add_all(
        [
            Article(id=1, title="Volcanoes", body="Lava flows from the volcano.", author="ann"),
            Article(id=2, title="Oceans", body="Whales swim in the deep ocean.", author="bob"),
            Article(id=3, title="Deserts", body="Camels cross the hot desert.", author="cy"),
        ]
    )
    session.commit()
    report = platform.attach(
        "articles",
        "public.articles",
        text_columns=["title", "body"],
        metadata_columns=["author"],
        model="test-hash-64",
    )
    assert report.records_inserted == 3
    # the app keeps writing through its session, in its own transactions
    session.add(Article(id=4, title="Forests", body="Owls live in the old forest.", author="di"))
    session.get(Article, 2).body = "Sharks swim in the deep ocean."  # type: ignore[union-attr]
    session.delete(session.get(Article, 3))
    session.commit()
    hash_sync(db_url, "articles")

    # SQLAlchemy: the app's model joined to the search selectable
    hits = search_fn("articles", _query("sharks ocean"), 3)
    rows = session.execute(
        select(Article, hits.c.similarity)
        .join(hits, hits.c.id == external_id_of(Article.id))
        .order_by(hits.c.similarity.desc())
    ).all()
    assert rows[0][0].title == "Oceans" and rows[0][1] > rows[-1][1]
    assert {a.id for a, _ in rows} == {1, 2, 4}  # the deleted article is never returned
    # the integer form of the join (uses the app's primary key index)
    by_int = session.execute(
        select(Article.title).join(hits, Article.id == cast(hits.c.id, Integer))
    ).scalars()
    assert set(by_int) == {"Volcanoes", "Oceans", "Forests"}
    # more like this, joined back the same way
    like = similar_fn("articles", "4", 1)
    assert session.execute(
        select(Article.id).join(like, like.c.id == external_id_of(Article.id))
    ).scalars().all() in ([1], [2])

    # plain SQL: the documented join
    plain = (
        session.connection()
        .exec_driver_sql(
            "SELECT a.id, a.title, s.similarity "
            "FROM embedplat.search('articles', %(q)s::real[]::vector, 2) s "
            "JOIN public.articles a ON a.id = s.id::integer "
            "ORDER BY s.similarity DESC",
            {"q": _query("lava volcano")},
        )
        .all()
    )
    assert plain[0][:2] == (1, "Volcanoes")

    # Platform.search works on the attached collection as on any other
    assert platform.search("articles", "owls forest", k=1)[0].id == "4"
    # ingest is refused for an attached collection: the table is the source of truth
    with pytest.raises(InvalidInputError, match="attached to table articles"):
        platform.ingest("articles", [{"id": "9", "text": "not from the table"}])
    assert [a.state for a in platform.attachments()] == ["ok"]


def test_near_duplicates_on_an_attached_collection(
    session: Session, platform: Platform, db_url: str
) -> None:
    body = "The quick brown fox jumps over the lazy dog near the river bank."
    session.add_all(
        [
            Article(id=1, title="Fox", body=body),
            Article(id=2, title="Fox", body=body),
            Article(id=3, title="Other", body="Completely different words about databases."),
        ]
    )
    session.commit()
    platform.attach("articles", "articles", text_columns=["title", "body"], model="test-hash-64")
    hash_sync(db_url, "articles")
    pairs = platform.near_duplicates("articles", threshold=0.95)
    assert [(p.a, p.b) for p in pairs] == [("1", "2")]
    # anomaly scores: the odd one out is the most anomalous
    scores = platform.anomaly_scores("articles", k=1)
    assert scores[0].id == "3" and {s.id for s in scores} == {"1", "2", "3"}
    # the app edits one copy: after the sync the pair is gone
    session.get(Article, 2).body = "A slow green turtle walks under the bright sun."  # type: ignore[union-attr]
    session.commit()
    hash_sync(db_url, "articles")
    assert platform.near_duplicates("articles", threshold=0.95) == []
