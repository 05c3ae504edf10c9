-- The content hash every record and chunk carries, computed by the database itself so that
-- rows written by plain SQL get it too (the generated columns records.content_hash and
-- chunks.text_hash).
--
-- The same result as v1's sha256(convert_to(content, 'UTF8')), in a body PostgreSQL can inline:
-- convert_to() is only STABLE, so v1 ran as a full SQL-function call for every row written,
-- while every step here is IMMUTABLE (replace, the text -> bytea I/O cast textout + byteain,
-- sha256), so the planner substitutes the body into the generated column's expression.
-- Why it is equal, in a UTF8 database (`embedplat init` checks):
-- * text's bytes are its UTF-8 bytes (what convert_to to UTF8 returns) and never hold 0x00;
-- * the cast hands those bytes to byteain, which copies every byte but the backslash; a
--   backslash starts an escape: `\\` (one backslash), `\nnn` (octal) or, at the very start,
--   `\x` (hex). Every backslash doubled, byteain sees each as the first of a `\\` pair (the
--   next byte is a backslash, never an octal digit or x) and gives back exactly one;
-- * a backslash (0x5C) is never part of a multibyte UTF-8 character, and under COLLATE "C"
--   replace matches bytes only (a nondeterministic collation of the caller's could refuse the
--   search, or match a look-alike character).
CREATE OR REPLACE FUNCTION embedplat.text_sha256(content text)
RETURNS bytea
LANGUAGE sql
IMMUTABLE STRICT PARALLEL SAFE
AS $fn$ SELECT sha256(replace(content COLLATE "C", E'\\', E'\\\\')::bytea) $fn$;

COMMENT ON FUNCTION embedplat.text_sha256(text) IS
    'SHA-256 of the UTF-8 bytes of the text; equals hashlib.sha256(text.encode()).digest().';
