"""The state file's schema, one named step at a time, applied in order on open (PRAGMA user_version counts them), so
that a state file written by any earlier release keeps working. A new step is one more function at the end; a
released one never changes."""

from __future__ import annotations

from collections.abc import Callable

Migration = Callable[[], str]  # the step's SQL script; the store runs it and the version bump in one transaction
MIGRATIONS: list[Migration] = []


def migration(step: Migration) -> Migration:
    MIGRATIONS.append(step)
    return step


@migration
def m001_first_schema() -> str:
    """The first schema."""
    return """
        CREATE TABLE papers (
            key TEXT PRIMARY KEY,          -- arXiv id with version: 2606.28354v1
            announced TEXT NOT NULL,
            data TEXT NOT NULL,            -- the Paper as JSON
            fetched_at TEXT NOT NULL
        );
        CREATE INDEX papers_fetched_at ON papers (fetched_at);
        CREATE TABLE profiles (
            name TEXT PRIMARY KEY,
            created_at TEXT NOT NULL       -- papers fetched before a profile existed are not classified for it
        );
        CREATE TABLE verdicts (
            paper_key TEXT NOT NULL,
            interests_hash TEXT NOT NULL,
            model TEXT NOT NULL,
            prompt_version INTEGER NOT NULL,
            data TEXT NOT NULL,            -- the Verdict as JSON
            created_at TEXT NOT NULL,
            PRIMARY KEY (paper_key, interests_hash, model, prompt_version)
        );
        CREATE TABLE failures (
            paper_key TEXT NOT NULL,
            profile TEXT NOT NULL,
            reason TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (paper_key, profile)
        );
        CREATE TABLE digests (
            id INTEGER PRIMARY KEY,
            profile TEXT NOT NULL,
            announced TEXT NOT NULL,
            subject TEXT NOT NULL,
            message BLOB NOT NULL,         -- the exact RFC 5322 message, so a retry sends the same bytes
            created_at TEXT NOT NULL,
            UNIQUE (profile, announced)
        );
        CREATE TABLE digest_papers (
            profile TEXT NOT NULL,
            paper_key TEXT NOT NULL,
            digest_id INTEGER NOT NULL REFERENCES digests (id),
            PRIMARY KEY (profile, paper_key)  -- each paper is in at most one digest per profile
        );
        CREATE TABLE deliveries (
            digest_id INTEGER NOT NULL REFERENCES digests (id),
            recipient TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('pending', 'sent')),
            attempts INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            sent_at TEXT,
            PRIMARY KEY (digest_id, recipient)
        );
        CREATE TABLE feeds (
            url TEXT PRIMARY KEY,
            etag TEXT,
            last_modified TEXT,
            last_announced TEXT,
            fetched_at TEXT NOT NULL
        );
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            started_at TEXT NOT NULL,
            summary TEXT NOT NULL
        );
    """


@migration
def m002_runs_say_whether_they_ended_well() -> str:
    """Whether a run ended well, so `serve` can tell a missed schedule from a run that already happened."""
    return """
        ALTER TABLE runs ADD COLUMN finished_at TEXT;
        ALTER TABLE runs ADD COLUMN ok INTEGER NOT NULL DEFAULT 0;
    """


@migration
def m003_ratings_and_eval_verdicts() -> str:
    """The reader's ratings (never pruned: they are the reader's own work), and `digest eval`'s verdicts, cached
    apart from the digest's so that evaluating never changes what a digest shows."""
    return """
        CREATE TABLE ratings (
            profile TEXT NOT NULL,
            arxiv_id TEXT NOT NULL,        -- without version: a rating is about the paper, not one version of it
            rating INTEGER NOT NULL CHECK (rating IN (1, -1)),
            paper TEXT NOT NULL,           -- the Paper as rated, as JSON: examples and eval read it
            source TEXT NOT NULL CHECK (source IN ('cli', 'import', 'web')),
            rated_at TEXT NOT NULL,
            PRIMARY KEY (profile, arxiv_id)
        );
        CREATE INDEX ratings_rated_at ON ratings (profile, rated_at);
        CREATE TABLE eval_verdicts (
            paper_key TEXT NOT NULL,
            interests_hash TEXT NOT NULL,
            model TEXT NOT NULL,
            prompt_version INTEGER NOT NULL,
            data TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (paper_key, interests_hash, model, prompt_version)
        );
    """


@migration
def m004_digests_kept_and_settings() -> str:
    """The web side: each digest's content (the Digest as JSON) for the archive and the feed, and settings such
    as the secret that signs links, generated once so that links survive restarts."""
    return """
        ALTER TABLE digests ADD COLUMN content TEXT;
        CREATE TABLE settings (
            name TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );
    """


@migration
def m005_a_message_per_recipient() -> str:
    """One message per recipient, with a Message-ID of its own kept across retries; deliveries refused for good
    ('failed', never retried) and those to an address no longer configured ('dropped')."""
    return """
        CREATE TABLE deliveries_5 (
            digest_id INTEGER NOT NULL REFERENCES digests (id),
            recipient TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed', 'dropped')),
            attempts INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            sent_at TEXT,
            message_id TEXT,               -- NULL for deliveries recorded before: the digest message's own is used
            PRIMARY KEY (digest_id, recipient)
        );
        INSERT INTO deliveries_5 (digest_id, recipient, status, attempts, last_error, sent_at)
            SELECT digest_id, recipient, status, attempts, last_error, sent_at FROM deliveries;
        DROP TABLE deliveries;
        ALTER TABLE deliveries_5 RENAME TO deliveries;
    """


@migration
def m006_batch_submissions() -> str:
    """Batch API submissions. A submission is recorded with its requests before the batch is created (its key
    goes with it as metadata, so a batch created just before a crash is found again), and is open until its
    results are recorded: a run resumes an open batch and never pays for the same requests twice."""
    return """
        CREATE TABLE batches (
            submission TEXT PRIMARY KEY,   -- ours, also in the batch's metadata
            batch_id TEXT UNIQUE,          -- the provider's; NULL until the batch is created
            input_file_id TEXT NOT NULL,
            model TEXT NOT NULL,
            status TEXT NOT NULL,          -- 'submitting', then the provider's last word (validating ... completed)
            created_at TEXT NOT NULL,
            closed_at TEXT                 -- its results are recorded, or it was given up: never polled again
        );
        CREATE TABLE batch_requests (
            submission TEXT NOT NULL REFERENCES batches (submission),
            custom_id TEXT NOT NULL,
            profile TEXT NOT NULL,
            paper_key TEXT NOT NULL,
            interests_hash TEXT NOT NULL,  -- the prompt it was asked with, as the verdict cache keys it
            PRIMARY KEY (submission, custom_id)
        );
    """


@migration
def m007_preview_spending() -> str:
    """What `digest preview` spent is recorded beside the runs, for `digest status`; it is not a run: the
    scheduler's "last good run" is a run's."""
    return """
        ALTER TABLE runs ADD COLUMN command TEXT NOT NULL DEFAULT 'run';
    """


@migration
def m008_papers_of_any_source() -> str:
    """Sources beside arXiv. A paper's id is its source's (an arXiv id, or a bioRxiv or medRxiv DOI), and the
    Paper's JSON says which source: arXiv papers stored before read as they are. A rating names the paper by it."""
    return """
        ALTER TABLE ratings RENAME COLUMN arxiv_id TO paper_id;
    """


@migration
def m009_chat_destinations_remembered() -> str:
    """A chat message whose request went out and was never answered (the service trickled its answer past the
    deadline) may have reached the service: 'uncertain', never sent again, so that it does not arrive twice. And
    each chat destination's record across runs: how many runs in a row it has taken nothing (at three its digests
    fail: a refusal its answers do not name is not retried for ever), and the time its service asked to be sent
    nothing before (Retry-After), so that the next run does not ask sooner."""
    return """
        CREATE TABLE deliveries_9 (
            digest_id INTEGER NOT NULL REFERENCES digests (id),
            recipient TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed', 'dropped', 'uncertain')),
            attempts INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            sent_at TEXT,
            message_id TEXT,
            PRIMARY KEY (digest_id, recipient)
        );
        INSERT INTO deliveries_9 (digest_id, recipient, status, attempts, last_error, sent_at, message_id)
            SELECT digest_id, recipient, status, attempts, last_error, sent_at, message_id FROM deliveries;
        DROP TABLE deliveries;
        ALTER TABLE deliveries_9 RENAME TO deliveries;
        CREATE TABLE destinations (
            name TEXT PRIMARY KEY,         -- as deliveries name it: ntfy://ntfy.sh (3fa2c1d9)
            failed_runs INTEGER NOT NULL DEFAULT 0,
            not_before TEXT                -- UTC; NULL: whenever
        );
    """


@migration
def m010_paper_vectors() -> str:
    """Each paper's embedding, once per paper and embedding model, shared by every profile: float32 values, L2
    normalised, as raw bytes. The interests of a profile are embedded too, under the hash of their text."""
    return """
        CREATE TABLE vectors (
            key TEXT NOT NULL,             -- a paper's key (2606.29563v1), or 'text:' and a hash of the text
            model TEXT NOT NULL,           -- the embedding model: vectors of two models never mix
            vector BLOB NOT NULL,
            PRIMARY KEY (key, model)
        );
    """


@migration
def m011_zotero_library() -> str:
    """The reader's Zotero library as last read: each library's version, its collections, and what each of its
    top-level items says (the paper it names, its collections, whether it is in the trash, when it was added), so
    that an unchanged library costs one request and a changed one its changes only; and the papers "Save to
    Zotero" wrote, with the write token of a create not yet confirmed, so that a retried save never makes two.
    A rating may come from the library ('zotero'): the library's changes change it, and never a rating given by
    hand. SQLite cannot alter a CHECK, so the ratings table is rebuilt as it was, with the new source."""
    return """
        CREATE TABLE ratings_11 (
            profile TEXT NOT NULL,
            paper_id TEXT NOT NULL,
            rating INTEGER NOT NULL CHECK (rating IN (1, -1)),
            paper TEXT NOT NULL,
            source TEXT NOT NULL CHECK (source IN ('cli', 'import', 'web', 'zotero')),
            rated_at TEXT NOT NULL,        -- for 'zotero', the item's dateAdded: recent additions weigh more
            PRIMARY KEY (profile, paper_id)
        );
        INSERT INTO ratings_11 SELECT profile, paper_id, rating, paper, source, rated_at FROM ratings;
        DROP TABLE ratings;
        ALTER TABLE ratings_11 RENAME TO ratings;
        CREATE INDEX ratings_rated_at ON ratings (profile, rated_at);
        CREATE TABLE zotero_libraries (
            library TEXT PRIMARY KEY,      -- the API's address of it (https://api.zotero.org/users/1234567), no key
            version INTEGER NOT NULL,      -- the Last-Modified-Version to which its items and collections are listed
            read_at TEXT NOT NULL
        );
        CREATE TABLE zotero_collections (
            library TEXT NOT NULL,
            key TEXT NOT NULL,
            name TEXT NOT NULL,
            parent TEXT,                   -- the key of the collection it is in; NULL at the top
            PRIMARY KEY (library, key)
        );
        CREATE TABLE zotero_items (
            library TEXT NOT NULL,
            key TEXT NOT NULL,
            listed INTEGER NOT NULL,       -- its version, as the library listed it
            read INTEGER,                  -- the version read; NULL, or below listed: still to read
            paper_id TEXT,                 -- the paper it names; NULL: no arXiv, bioRxiv or medRxiv id (counted)
            seed TEXT,                     -- what the item says of that paper (title, abstract, authors), as JSON
            collections TEXT NOT NULL DEFAULT '[]',
            trashed INTEGER NOT NULL DEFAULT 0,
            added_at TEXT,
            PRIMARY KEY (library, key)
        );
        CREATE TABLE zotero_saves (
            library TEXT NOT NULL,
            paper_id TEXT NOT NULL,
            write_token TEXT NOT NULL,     -- sent with the create, and with every retry of it
            item_key TEXT,                 -- NULL until Zotero confirmed the create
            saved_at TEXT NOT NULL,
            PRIMARY KEY (library, paper_id)
        );
    """


# A stored paper's searchable text, from its JSON, as one SQL expression per column. The index cannot hold the text
# (it is contentless: the papers table has it already), so a row is taken out by giving the index the very values it
# was given: the same expressions for adding and for removing, over the same JSON.
_SEARCHED = {
    "title": "json_extract({row}.data, '$.title')",
    "abstract": "json_extract({row}.data, '$.abstract')",
    "authors": "(SELECT group_concat(value, ', ') FROM json_each({row}.data, '$.authors'))",
}


def _searched(row: str) -> str:
    return ", ".join(expression.format(row=row) for expression in _SEARCHED.values())


@migration
def m012_paper_search() -> str:
    """Full-text search over every stored paper (title, abstract, authors) for `digest mcp` and the web side's JSON:
    an FTS5 index kept in step with the papers table by triggers, whichever code saves, prunes or changes a paper,
    and filled here with the papers already stored. Its rows are numbered in a table of their own, by an explicit
    INTEGER PRIMARY KEY, because VACUUM may renumber the papers table's implicit rowids."""
    columns = ", ".join(_SEARCHED)
    add = f"""
        INSERT INTO paper_search_rows (paper_key, paper_id, announced)
            VALUES (new.key, coalesce(json_extract(new.data, '$.id'), json_extract(new.data, '$.arxiv_id')),
                    new.announced);
        INSERT INTO paper_search (rowid, {columns}) VALUES (last_insert_rowid(), {_searched("new")});"""
    remove = f"""
        INSERT INTO paper_search (paper_search, rowid, {columns})
            SELECT 'delete', id, {_searched("old")} FROM paper_search_rows WHERE paper_key = old.key;
        DELETE FROM paper_search_rows WHERE paper_key = old.key;"""
    return f"""
        CREATE TABLE paper_search_rows (
            id INTEGER PRIMARY KEY,        -- the paper's row in paper_search
            paper_key TEXT NOT NULL UNIQUE,
            paper_id TEXT NOT NULL,        -- without version: versions of one paper are one search result
            announced TEXT NOT NULL
        );
        CREATE INDEX paper_search_rows_paper_id ON paper_search_rows (paper_id);
        -- porter: "models" finds "model"; remove_diacritics: "Patino" finds "Patiño".
        CREATE VIRTUAL TABLE paper_search USING fts5(
            {columns}, content='', tokenize='porter unicode61 remove_diacritics 2'
        );
        CREATE TRIGGER paper_search_add AFTER INSERT ON papers BEGIN {add} END;
        CREATE TRIGGER paper_search_remove AFTER DELETE ON papers BEGIN {remove} END;
        CREATE TRIGGER paper_search_change AFTER UPDATE ON papers BEGIN {remove} {add} END;
        INSERT INTO paper_search_rows (paper_key, paper_id, announced)
            SELECT key, coalesce(json_extract(data, '$.id'), json_extract(data, '$.arxiv_id')), announced FROM papers;
        INSERT INTO paper_search (rowid, {columns})
            SELECT r.id, {_searched("p")} FROM paper_search_rows r JOIN papers p ON p.key = r.paper_key;
    """
