-- embedplat.hybrid_search, version 2 of its file: only embedplat.text_query changes; the type
-- embedplat.hybrid_hit, embedplat.text_query_is_plain and embedplat.hybrid_search itself stay
-- as hybrid_search.v1.sql defines them (see its header for the ranking).
--
-- websearch_to_tsquery sends a NOTICE ("text-search query contains only stop words or doesn't
-- contain lexemes, ignored") for a query of only stop words, which every client printed,
-- although hybrid_search handles that case on purpose (vector list only). The function now
-- runs with client_min_messages = warning: the SET clause applies on entry and is undone on
-- exit, so the caller's own setting is untouched and warnings or errors still get through.

-- The tsquery hybrid_search matches for a query text (NULL when it has no searchable words):
-- for plain words, the OR of their lexemes, of which hybrid_search keeps the informative ones.
CREATE OR REPLACE FUNCTION embedplat.text_query(query_text text)
RETURNS tsquery
LANGUAGE plpgsql
IMMUTABLE PARALLEL SAFE
SET client_min_messages = warning
AS $fn$
DECLARE
    q tsquery;
BEGIN
    IF query_text IS NULL THEN
        RETURN NULL;
    END IF;
    q := websearch_to_tsquery('english', query_text);
    IF numnode(q) = 0 THEN
        RETURN NULL;  -- empty, or only stop words
    END IF;
    IF embedplat.text_query_is_plain(query_text) THEN
        -- Plain words: any of them. The tsquery's own text form quotes every lexeme, so
        -- re-reading it after swapping the AND operators is safe.
        q := replace(q::text, ' & ', ' | ')::tsquery;
    END IF;
    RETURN q;
END
$fn$;
