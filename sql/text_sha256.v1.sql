-- The content hash every record and chunk carries, computed by the database itself so that
-- rows written by plain SQL get it too.
--
-- convert_to() is only STABLE in PostgreSQL's catalogue (it depends on the server encoding);
-- embedplat requires a UTF8 database (`embedplat init` checks), under which the result never
-- changes, so declaring the wrapper IMMUTABLE is sound and lets generated columns use it.
CREATE OR REPLACE FUNCTION embedplat.text_sha256(content text)
RETURNS bytea
LANGUAGE sql
IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT sha256(convert_to(content, 'UTF8')) $$;

COMMENT ON FUNCTION embedplat.text_sha256(text) IS
    'SHA-256 of the UTF-8 bytes of the text; equals hashlib.sha256(text.encode()).digest().';
