-- embedplat.search, version 3 of its file: only embedplat.check_query_dimensions changes; the
-- rest stays as search.v2.sql defines it.
--
-- A query vector of zeros has no direction: its cosine distance to anything is NaN, and
-- search / hybrid_search returned every row with similarity NaN. The check refuses it, as
-- pgvector itself refuses NaN elements. It asks pgvector (query <=> query is NaN), so a vector
-- whose squares underflow in pgvector's single-precision arithmetic (elements around 1e-23)
-- or overflow it is refused too, exactly when pgvector could not measure it.
CREATE OR REPLACE FUNCTION embedplat.check_query_dimensions(
    collection text, query vector, dimensions integer, model_name text, caller text
)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
AS $fn$
BEGIN
    IF vector_dims(query) <> dimensions THEN
        RAISE EXCEPTION '%: the query vector has % dimensions, but collection % is embedded with % (% dimensions); embed the query with that model',
            caller, vector_dims(query), quote_literal(collection), model_name, dimensions
            USING ERRCODE = 'data_exception';
    END IF;
    IF (query <=> query) = 'NaN'::float8 THEN
        RAISE EXCEPTION '%: the query vector is all zeros (or too close to zero to measure): it has no direction, so no cosine similarity; pass a non-zero vector',
            caller
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$fn$;
