"""Time every monitoring query of `sql/` on a large archive: 1 million messages by default.

    .venv/bin/python bench/sql_bench.py [--rows 1000000] [--users 1000] [--days 90] [--keep]

Loads the messages (spread over 90 days and 1 000 users, a few percent errors, some unmapped
contacts), with attachments, orders, the outbox and updates in proportion, into a database of its
own: `<database>_sqlbench` on the server of DATABASE_URL, or a temporary PostgreSQL started for the
run when DATABASE_URL is not set. Then it prints, for each `sql/*.sql` file and each query of the
admin page (its numbers, the search of messages, a user's page, the dead letter), the median time
of several runs and the EXPLAIN ANALYZE plan. Each must answer in under 100 ms; the exit status is
1 when one does not.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import psycopg2  # noqa: E402
import psycopg2.extensions  # noqa: E402

TARGET_MS = 100.0
"""Milliseconds each query must answer within (median of the timed runs)."""

# The data set, built inside PostgreSQL from generate_series (seeded, so every run is the same).
# Roughly: 2 % of messages from unmapped contacts, 3 % archive errors, 12 % of incoming messages
# voice notes and 8 % images, 3 % of incoming messages content orders.
LOAD_STATEMENTS: list[tuple[str, str]] = [
    ("seed", "SELECT setseed(0.42)"),
    (
        "users",
        """
        INSERT INTO user_bucket_mapping (user_id, bucket_name, notify_on_ready, language, display_name,
                                         bucket_created_at, created_at)
        SELECT 'user-' || lpad(u::text, 4, '0'), 'bench-' || md5('user-' || u::text), u %% 3 = 0,
               (ARRAY['en', 'pt', 'es'])[1 + u %% 3], 'User ' || u,
               now() - interval '120 days', now() - interval '120 days'
          FROM generate_series(1, %(users)s) AS u
        """,
    ),
    (
        "contact links",
        """
        INSERT INTO contact_links (user_id, chatwoot_account_id, link_type, link_value)
        SELECT 'user-' || lpad(u::text, 4, '0'), 1, 'contact_id', (100000 + u)::text
          FROM generate_series(1, %(users)s) AS u
        """,
    ),
    (
        "messages",
        """
        INSERT INTO meeting_notes (
            chatwoot_account_id, chatwoot_message_id, chatwoot_conversation_id, chatwoot_inbox_id,
            chatwoot_contact_id, user_id, source_type, message_type, content_type, content, is_private,
            sender_type, message_created_at, payload, content_fingerprint, processing_status,
            transcription_status, transcript, classification_status, message_kind, gcs_storage_path,
            error_details, stored_at, created_at, updated_at, contact_phone)
        SELECT 1, g.i::text, 500000 + g.contact, 4, g.contact,
               CASE WHEN g.unmapped THEN NULL ELSE 'user-' || lpad(g.u::text, 4, '0') END,
               g.source_type, g.message_type, 'text', g.content, false,
               CASE g.message_type WHEN 'incoming' THEN 'contact' WHEN 'outgoing' THEN 'agent_bot' END,
               g.created_at,
               jsonb_build_object(
                   'event', 'message_created', 'id', g.i, 'content', g.content,
                   'message_type', g.message_type, 'created_at', g.created_at,
                   'sender', jsonb_build_object('id', g.contact, 'name', 'Contact ' || g.contact,
                                                'phone_number', '+5511' || lpad(g.contact::text, 9, '0')),
                   'conversation', jsonb_build_object('id', 500000 + g.contact,
                                                      'channel', 'Channel::Whatsapp', 'status', 'open'),
                   'inbox', jsonb_build_object('id', 4, 'name', 'WhatsApp'),
                   'account', jsonb_build_object('id', 1, 'name', 'Bench'),
                   'additional_attributes', jsonb_build_object('trace', repeat(md5(g.i::text), 12))),
               md5(g.i::text || 'fingerprint'),
               g.status,
               CASE WHEN g.message_type <> 'incoming' THEN 'not_needed'
                    WHEN g.kind_r < 0.12 THEN CASE WHEN g.status = 'received' THEN 'pending'
                                                    WHEN g.r2 < 0.01 THEN 'failed' ELSE 'done' END
                    ELSE 'not_needed' END,
               CASE WHEN g.message_type = 'incoming' AND g.kind_r < 0.12 THEN g.content END,
               CASE WHEN g.message_type <> 'incoming' THEN 'not_needed'
                    WHEN g.status = 'stored' THEN 'done' ELSE 'pending' END,
               CASE WHEN g.message_type <> 'incoming' OR g.status <> 'stored' THEN NULL
                    WHEN g.kind_r >= 0.97 THEN 'order' WHEN g.kind_r >= 0.93 THEN 'answer'
                    WHEN g.kind_r >= 0.92 THEN 'command' ELSE 'note' END,
               CASE WHEN g.status = 'stored' THEN
                    'gs://bench-' || md5('user-' || g.u::text) || '/whatsapp-messages/'
                    || to_char(g.created_at, 'YYYY-MM-DD') || '/' || g.i || '.json' END,
               CASE WHEN g.status = 'error' THEN
                    (ARRAY['gcs unavailable: 503', 'attachment download failed: 404',
                           'attachment too large', 'bucket create rate limited: 429',
                           'timeout'])[1 + (g.i %% 5)] END,
               CASE WHEN g.status = 'stored' THEN g.created_at + g.latency END,
               g.created_at,
               CASE WHEN g.status = 'stored' THEN g.created_at + g.latency ELSE g.created_at END,
               '+5511' || lpad(g.contact::text, 9, '0')
          FROM (
            SELECT s.i, s.unmapped, s.u, s.created_at, s.r2, s.kind_r, s.latency,
                   CASE WHEN s.unmapped THEN 900000 + (s.i %% 300) ELSE 100000 + s.u END AS contact,
                   CASE WHEN s.src_r < 0.95 THEN 'whatsapp' WHEN s.src_r < 0.98 THEN 'api'
                        ELSE 'web_widget' END AS source_type,
                   CASE WHEN s.type_r < 0.75 THEN 'incoming' WHEN s.type_r < 0.97 THEN 'outgoing'
                        ELSE 'template' END AS message_type,
                   CASE WHEN s.created_at > now() - interval '3 minutes' OR s.status_r < 0.0002
                        THEN 'received' WHEN s.status_r < 0.03 THEN 'error' ELSE 'stored' END AS status,
                   'Note ' || s.i || ': ' || repeat(md5(s.i::text), 3) AS content
              FROM (
                SELECT i, random() < 0.02 AS unmapped, 1 + (i %% %(users)s) AS u,
                       -- Rows arrive in time order, as they do from the webhook (a little jitter).
                       least(now(), now() - (1 - i::float8 / %(rows)s) * (%(days)s * interval '1 day')
                                   + (random() - 0.5) * interval '2 minutes') AS created_at,
                       random() AS src_r, random() AS type_r, random() AS status_r, random() AS r2,
                       random() AS kind_r,
                       (0.15 + 20 * power(random(), 6)) * interval '1 second' AS latency
                  FROM generate_series(1, %(rows)s) AS i
              ) AS s
          ) AS g
        """,
    ),
    (
        "attachments",
        """
        INSERT INTO message_attachments (meeting_note_id, chatwoot_attachment_id, file_type, content_type,
                                         size_bytes, bucket_name, object_name, status, created_at, updated_at)
        SELECT n.id, n.id * 10, CASE WHEN n.transcript IS NOT NULL THEN 'audio' ELSE 'image' END,
               CASE WHEN n.transcript IS NOT NULL THEN 'audio/ogg' ELSE 'image/jpeg' END,
               (20000 + random() * 3000000)::bigint,
               split_part(substr(n.gcs_storage_path, 6), '/', 1),
               'whatsapp-messages/' || to_char(n.created_at, 'YYYY-MM-DD') || '/' || n.chatwoot_message_id
                 || '/' || (n.id * 10) || CASE WHEN n.transcript IS NOT NULL THEN '.ogg' ELSE '.jpg' END,
               'stored', n.created_at, n.stored_at
          FROM meeting_notes n
         WHERE n.processing_status = 'stored' AND n.message_type = 'incoming'
           AND (n.transcript IS NOT NULL OR n.id %% 12 = 0)
        """,
    ),
    (
        "transcriptions",
        """
        INSERT INTO transcriptions (meeting_note_id, status, provider, model, language, audio_seconds,
                                    provider_seconds, pieces, provider_calls, cost_per_minute, estimated_cost,
                                    created_at, updated_at)
        SELECT n.id, n.transcription_status, 'openai', 'whisper-1', 'en', t.seconds, t.seconds / 12, 1, 1,
               0.006, round(t.seconds / 60 * 0.006, 6), coalesce(n.stored_at, n.created_at),
               coalesce(n.stored_at, n.created_at)
          FROM meeting_notes n
          CROSS JOIN LATERAL (SELECT round((3 + random() * 117)::numeric, 3) AS seconds) AS t
         WHERE n.transcription_status IN ('done', 'failed')
        """,
    ),
    (
        "orders",
        """
        INSERT INTO orders (chatwoot_account_id, chatwoot_conversation_id, chatwoot_contact_id, user_id,
                            source_meeting_note_id, status, platform, length, tone, topic, subject,
                            created_at, updated_at, ready_at)
        SELECT 1, n.chatwoot_conversation_id, n.chatwoot_contact_id, n.user_id, n.id, o.status,
               'LinkedIn', 'Short', 'Professional', 'Tips', 'Subject of order ' || n.id,
               n.created_at, n.created_at + interval '10 minutes',
               CASE WHEN o.status = 'ready' THEN n.created_at + (2 + random() * 40) * interval '1 minute' END
          FROM meeting_notes n
          CROSS JOIN LATERAL (
            SELECT CASE WHEN n.created_at > now() - interval '1 hour' AND n.id %% 2 = 0 THEN 'clarifying'
                        WHEN n.id %% 100 < 72 THEN 'ready' WHEN n.id %% 100 < 84 THEN 'cancelled'
                        WHEN n.id %% 100 < 88 THEN 'failed' WHEN n.id %% 100 < 90 THEN 'queued'
                        WHEN n.id %% 100 < 92 THEN 'generating' ELSE 'clarifying' END AS status
          ) AS o
         WHERE n.message_kind = 'order'
        """,
    ),
    (
        "outbox",
        """
        INSERT INTO outbox (dedupe_key, chatwoot_account_id, chatwoot_conversation_id, kind, order_id, body,
                            status, attempts, error_details, created_at, updated_at, sent_at)
        SELECT 'order:' || o.id || ':' || k.kind, 1, o.chatwoot_conversation_id, k.kind, o.id,
               jsonb_build_object('content', 'Message about order ' || o.id),
               s.status, 1,
               CASE WHEN s.status = 'failed' THEN 'chatwoot 422: outside the 24-hour window'
                    WHEN s.status = 'not_sent' THEN 'CHATWOOT_BASE_URL not set' END,
               o.created_at + k.delay, o.created_at + k.delay,
               CASE WHEN s.status = 'sent' THEN o.created_at + k.delay + interval '1 second' END
          FROM orders o
          CROSS JOIN LATERAL (VALUES ('clarification', interval '2 seconds'),
                                     ('ready', interval '20 minutes')) AS k (kind, delay)
          CROSS JOIN LATERAL (
            SELECT CASE WHEN (o.id + length(k.kind)) %% 100 < 3 THEN 'failed'
                        WHEN (o.id + length(k.kind)) %% 100 < 5 THEN 'not_sent' ELSE 'sent' END AS status
          ) AS s
         WHERE k.kind = 'clarification' OR o.status = 'ready'
        """,
    ),
    (
        "updates",
        """
        INSERT INTO message_updates (meeting_note_id, fingerprint, payload, processing_status, created_at,
                                     updated_at)
        SELECT n.id, md5(n.id::text || 'edit'), '{"event": "message_updated"}'::jsonb, 'stored',
               n.created_at + interval '1 minute', n.created_at + interval '1 minute'
          FROM meeting_notes n
         WHERE n.id %% 20 = 0 AND n.processing_status = 'stored'
        """,
    ),
    (
        "conversations",
        """
        INSERT INTO conversations (chatwoot_account_id, chatwoot_conversation_id, chatwoot_contact_id, user_id,
                                   last_message_at)
        SELECT 1, chatwoot_conversation_id, chatwoot_contact_id, max(user_id), max(created_at)
          FROM meeting_notes
         GROUP BY chatwoot_conversation_id, chatwoot_contact_id
        """,
    ),
]


REQUIRED_TABLES = {"attachments": "message_attachments", "transcriptions": "transcriptions"}
"""Tables of later migrations: their rows are loaded when the table exists."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="messages (default: %(default)s)")
    parser.add_argument("--users", type=int, default=1000, help="users (default: %(default)s)")
    parser.add_argument("--days", type=int, default=90, help="days of history (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per query (default: %(default)s)")
    parser.add_argument("--keep", action="store_true", help="keep the bench database afterwards")
    parser.add_argument("--reuse", action="store_true", help="reuse a loaded bench database if there is one")
    parser.add_argument("--no-plans", action="store_true", help="print the times only")
    parser.add_argument(
        "--search-only", action="store_true", help="only the search queries (see SEARCH_QUERIES)"
    )
    return parser.parse_args(argv)


@contextmanager
def bench_server() -> Iterator[str]:
    """A server URL: DATABASE_URL's, or a temporary PostgreSQL stopped at the end."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    import devstack

    state = Path(tempfile.mkdtemp(prefix="meeting-notes-sqlbench-"))
    stack = devstack.Stack(state, fast=True)
    try:
        print("starting a temporary PostgreSQL ...", flush=True)
        yield stack.start_postgres()
    finally:
        stack.stop_postgres()
        shutil.rmtree(devstack.pg_data_root(state), ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)


def with_database(url: str, name: str) -> str:
    parsed = urlparse(url)
    return urlunparse(parsed._replace(path=f"/{name}"))


def create_database(server_url: str, reuse: bool, suffix: str = "sqlbench") -> tuple[str, bool]:
    """(URL of the bench database `<name>_<suffix>`, whether it already holds the data)."""
    base = urlparse(server_url).path.lstrip("/") or "meeting_notes"
    name = f"{base}_{suffix}"
    admin = psycopg2.connect(with_database(server_url, "postgres"))
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            exists = cur.fetchone() is not None
            if exists and reuse:
                return with_database(server_url, name), True
            if exists:
                cur.execute("DROP DATABASE " + psycopg2.extensions.quote_ident(name, cur) + " WITH (FORCE)")
            cur.execute("CREATE DATABASE " + psycopg2.extensions.quote_ident(name, cur))
    finally:
        admin.close()
    return with_database(server_url, name), False


def table_exists(cur: Any, name: str) -> bool:
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (name,))
    return bool(cur.fetchone()[0])


def load(url: str, rows: int, users: int, days: int) -> None:
    bulk_load(
        url,
        LOAD_STATEMENTS,
        {"rows": rows, "users": users, "days": days},
        work_mem="256MB",
        after=rebuild_rollups,
        vacuum="VACUUM (ANALYZE)",
    )


def bulk_load(
    url: str,
    statements: Any,
    params: dict[str, Any],
    *,
    work_mem: str,
    vacuum: str,
    after: Any = None,
) -> None:
    """Run (label, statement) pairs with the row triggers off and meeting_notes' indexes (but its
    keys) dropped, then build the indexes again, run `after(cur)` and vacuum."""
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SET synchronous_commit = off")
            cur.execute("SET maintenance_work_mem = %s", (work_mem,))
            # Row triggers keep the roll-ups current one row at a time; a bulk load rebuilds them once.
            cur.execute("SET session_replication_role = replica")
            # So do indexes: those of meeting_notes (but its keys) are built again after the load.
            deferred = deferred_indexes(cur)
            for label, statement in statements:
                table = REQUIRED_TABLES.get(label)
                if table and not table_exists(cur, table):
                    print(f"  {label:14} skipped (no table {table})", flush=True)
                    continue
                started = time.perf_counter()
                cur.execute(statement, params)
                conn.commit()
                count = cur.rowcount if cur.rowcount >= 0 else 0
                print(f"  {label:14} {count:>9} rows  {time.perf_counter() - started:6.1f} s", flush=True)
            cur.execute("SET session_replication_role = DEFAULT")
            started = time.perf_counter()
            for statement in deferred:
                cur.execute(statement)
            conn.commit()
            print(
                f"  {'indexes':14} {len(deferred):>9}       {time.perf_counter() - started:6.1f} s",
                flush=True,
            )
            if after is not None:
                after(cur)
                conn.commit()
        conn.autocommit = True
        with conn.cursor() as cur:
            started = time.perf_counter()
            cur.execute(vacuum)
            print(f"  {'vacuum':14} {'':>9}       {time.perf_counter() - started:6.1f} s", flush=True)
    finally:
        conn.close()


def deferred_indexes(cur: Any) -> list[str]:
    """Drop the indexes of meeting_notes that back no constraint; the statements that rebuild them."""
    cur.execute(
        """
        SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS ddl
          FROM pg_index i
         WHERE i.indrelid = 'meeting_notes'::regclass
           AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
        """
    )
    found = cur.fetchall()
    for name, _ in found:
        cur.execute("DROP INDEX " + name)
    return [ddl for _, ddl in found]


def rebuild_rollups(cur: Any) -> None:
    """Roll-ups are kept current by the service as rows change; a bulk load rebuilds them once."""
    cur.execute("SELECT to_regprocedure('rebuild_monitoring_rollups()') IS NOT NULL")
    if cur.fetchone()[0]:
        started = time.perf_counter()
        cur.execute("SELECT rebuild_monitoring_rollups()")
        print(f"  {'roll-ups':14} {'':>9}       {time.perf_counter() - started:6.1f} s", flush=True)


PAGE_SEARCHES: list[tuple[str, str, dict[str, Any]]] = [
    ("by contact id", "admin.browse_messages", {"contact_id": 100001}),
    ("by phone", "admin.browse_messages", {"phone": "+5511000100001"}),
    ("by user", "admin.browse_messages", {"user_id": "user-0001"}),
    ("by user, page 40", "admin.browse_messages", {"user_id": "user-0001", "offset": 975}),
    ("user's counts", "admin.user_message_counts", {"user_id": "user-0001"}),
    ("user's buckets", "admin.user_buckets", {"user_id": "user-0001"}),
    ("user's orders", "admin.user_orders_by_status", {"user_id": "user-0001"}),
    ("dead letter", "admin.dead_letters_newest", {"limit": 20}),
    ("users offered by the link form", "admin.user_list", {"limit": 500, "after": ""}),
]
"""Queries of the admin page's search by contact or user, user page, dead letter and link form, with the values
they are timed with (one page of 25 results, newest first; the data set's user-0001 has 1 000 messages). The
page's word search is the records search, timed by the search part (`--search-only`, SEARCH_QUERIES)."""


def monitoring_queries() -> list[tuple[str, str, dict[str, Any]]]:
    """(label, SQL, parameters) of every sql/ file and every query of the admin page."""
    found: list[tuple[str, str, dict[str, Any]]] = [
        (p.name, p.read_text(), {}) for p in sorted((ROOT / "sql").glob("*.sql"))
    ]
    from app.admin.browse import BROWSE_FILTERS
    from app.db import load_queries

    page = load_queries()
    for key in sorted(page):
        if key.startswith("admin.dashboard_") or key == "admin.unmapped_contacts":
            found.append((f"page: {key}", page[key], page_params(page[key])))
    for label, key, params in PAGE_SEARCHES:
        defaults = {**BROWSE_FILTERS, "limit": 26, "offset": 0}
        found.append((f"page: {key} ({label})", page[key], {**defaults, **params}))
    return found


def time_query(cur: Any, sql: str, params: dict[str, Any], runs: int) -> list[float]:
    cur.execute(sql, params or None)
    cur.fetchall()  # warm-up
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        cur.execute(sql, params or None)
        cur.fetchall()
        times.append((time.perf_counter() - started) * 1000)
    return times


def page_params(sql: str) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if "%(limit)s" in sql:
        params["limit"] = 50
    if "%(offset)s" in sql:
        params["offset"] = 0
    if "%(days)s" in sql:
        params["days"] = 14
    if "%(tz)s" in sql:
        params["tz"] = "UTC"
    return params


def run(url: str, runs: int, plans: bool) -> bool:
    from tabulate import tabulate

    conn = psycopg2.connect(url)
    conn.autocommit = True
    summary = []
    ok = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM meeting_notes")
            total = cur.fetchone()[0]
            print(f"\nmeeting_notes rows: {total}")
            for name, sql, params in monitoring_queries():
                times = time_query(cur, sql, params, runs)
                median = statistics.median(times)
                passed = median < TARGET_MS
                ok = ok and passed
                summary.append((name, f"{median:.1f}", f"{max(times):.1f}", "ok" if passed else "SLOW"))
                if plans:
                    cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params or None)
                    plan = "\n".join(r[0] for r in cur.fetchall())
                    print(f"\n=== {name}: median {median:.1f} ms over {runs} runs\n{plan}")
    finally:
        conn.close()
    print(f"\nTarget: under {TARGET_MS:.0f} ms each (median of {runs} runs after a warm-up)\n")
    print(tabulate(summary, headers=["query", "median ms", "max ms", ""], tablefmt="github"))
    return ok


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from app.migrate import upgrade

    with bench_server() as server:
        url, loaded = create_database(server, args.reuse)
        try:
            upgrade(url)
            if not loaded and not args.search_only:
                print(f"loading {args.rows} messages over {args.days} days for {args.users} users ...")
                load(url, args.rows, args.users, args.days)
            ok = True if args.search_only else run(url, args.runs, not args.no_plans)
        finally:
            if not args.keep and not args.reuse:
                admin = psycopg2.connect(with_database(server, "postgres"))
                admin.autocommit = True
                with admin.cursor() as cur:
                    name = urlparse(url).path.lstrip("/")
                    cur.execute(
                        "DROP DATABASE IF EXISTS "
                        + psycopg2.extensions.quote_ident(name, cur)
                        + " WITH (FORCE)"
                    )
                admin.close()
        ok = search_bench(server, args) and ok
    return 0 if ok else 1


# ---------------------------------------------------------------------------------------------
# Search (app/records/search.py, app/queries/search.sql): each search at most 50 ms.
#
# The data set above has words in every message ("Note") or in one; a search meets everything in
# between. So the searches are timed on a database of their own: the same number of messages,
# users and days, each message 10 to 16 words drawn from a vocabulary of SEARCH_WORDS by rank as
# in a natural language (Zipf): w1 in about two messages of three, w10 in one of seven, w100 in
# one of sixty, w1000 in one of six hundred. An eighth of the messages have a transcript.

SEARCH_TARGET_MS = 50.0
"""Milliseconds each search must answer within (median of the timed runs)."""
SEARCH_WORDS = 4000

SEARCH_LOAD: list[tuple[str, str]] = [
    ("seed", "SELECT setseed(0.17)"),
    (
        "users",
        """
        INSERT INTO user_bucket_mapping (user_id, bucket_name, language)
        SELECT 'user-' || lpad(u::text, 4, '0'), 'search-' || md5(u::text), (ARRAY['en', 'pt', 'es', NULL])[1 + u %% 4]
          FROM generate_series(1, %(users)s) AS u
        """,
    ),
    (
        "messages",
        """
        INSERT INTO meeting_notes (
            chatwoot_account_id, chatwoot_message_id, chatwoot_conversation_id, chatwoot_contact_id, user_id,
            source_type, message_type, content, transcript, message_created_at, payload, processing_status,
            transcription_status, message_kind, stored_at, created_at, updated_at, search_vector)
        SELECT 1, g.i::text, 500000 + g.u, 100000 + g.u, 'user-' || lpad(g.u::text, 4, '0'),
               CASE WHEN g.k %% 20 = 0 THEN 'api' ELSE 'whatsapp' END,
               CASE WHEN g.k %% 4 = 0 THEN 'outgoing' ELSE 'incoming' END,
               g.words, CASE WHEN g.k %% 8 = 1 THEN g.words END, g.at, '{}'::jsonb, 'stored',
               CASE WHEN g.k %% 8 = 1 THEN 'done' ELSE 'not_needed' END,
               CASE WHEN g.k %% 4 = 0 THEN NULL ELSE 'note' END, g.at, g.at, g.at,
               search_document((ARRAY['en', 'pt', 'es', NULL])[1 + g.u %% 4], g.words,
                               CASE WHEN g.k %% 8 = 1 THEN g.words END)
          FROM (
            SELECT i, 1 + (i %% %(users)s) AS u, i / %(users)s AS k,
                   now() - make_interval(days => %(days)s) * (1 - i::float / %(rows)s) AS at,
                   (SELECT string_agg('w' || floor(exp(random() * ln(%(words)s)))::int, ' ')
                      FROM generate_series(1, 10 + i %% 7) WHERE i > 0) AS words
              FROM generate_series(1, %(rows)s) AS i
          ) AS g
        """,
    ),
]

SEARCH_QUERIES: list[tuple[str, dict[str, Any]]] = [
    ("every message, a word in 2 of 3", {"words": "w1"}),
    ("every message, a word in 1 of 7", {"words": "w10"}),
    ("every message, a word in 1 of 60", {"words": "w100"}),
    ("every message, a word in 1 of 600", {"words": "w1000"}),
    ("every message, a word in 1 of 4000", {"words": "w3999"}),
    ("every message, a word in none", {"words": "nowhere"}),
    ("every message, two words", {"words": "w10 w100"}),
    ("every message, one word or another", {"words": "w1000 or w2000"}),
    ("every message, a word, languages", {"words": "w100", "languages": ["en", "pt", "es"]}),
    ("a user, a word in 2 of 3", {"words": "w1", "user_id": "user-0001"}),
    ("a user, a word in 1 of 60", {"words": "w100", "user_id": "user-0001"}),
    ("a user, a word in 1 of 600", {"words": "w1000", "user_id": "user-0001"}),
    (
        "a user's /search, own notes, 5",
        {"words": "w100", "user_id": "user-0001", "own_only": True, "limit": 5},
    ),
    ("a contact, a word in 1 of 60", {"words": "w100", "contact_id": 100001}),
    ("a channel, a word in 1 of 60", {"words": "w100", "channel": "api"}),
    ("last 7 days, a word in 1 of 60", {"words": "w100", "since_days": 7}),
    ("a month 60 days ago, a word in 1 of 600", {"words": "w1000", "since_days": 75, "until_days": 45}),
    ("a user, last 30 days, a word in 1 of 7", {"words": "w10", "user_id": "user-0001", "since_days": 30}),
    ("page 10 of a word in 2 of 3", {"words": "w1", "page": 10}),
]
"""(label, parameters) of each timed search; 20 results a page unless `limit` says otherwise."""


def search_params(cur: Any, given: dict[str, Any]) -> dict[str, Any]:
    from app.records.search import PROBE

    params: dict[str, Any] = {
        "words": given["words"],
        "languages": given.get("languages", []),
        "headline_config": "simple",
        "headline_options": "MaxWords=20, MinWords=8, MaxFragments=2",
        "user_id": given.get("user_id"),
        "account_id": None,
        "contact_id": given.get("contact_id"),
        "channel": given.get("channel"),
        "since": None,
        "until": None,
        "own_only": given.get("own_only", False),
        "exclude_id": None,
        "before_at": None,
        "before_id": None,
        "limit": given.get("limit", 20),
        "probe": PROBE,
    }
    if given.get("user_id"):
        cur.execute("SELECT language FROM user_bucket_mapping WHERE user_id = %s", (given["user_id"],))
        language = cur.fetchone()[0]
        params["languages"] = [language] if language else []
    cur.execute(
        "SELECT now() - make_interval(days => %s), now() - make_interval(days => %s)",
        (given.get("since_days", 0), given.get("until_days", 0)),
    )
    since, until = cur.fetchone()
    params["since"] = since if "since_days" in given else None
    params["until"] = until if "until_days" in given else None
    if given.get("page"):
        # The keyset of the last row of page (page - 1), as the API's `next` carries it.
        cur.execute(
            "SELECT created_at, id FROM meeting_notes WHERE search_vector @@ search_query(%s, '{}')"
            " AND processing_status = 'stored' ORDER BY created_at DESC, id DESC OFFSET %s LIMIT 1",
            (given["words"], 20 * (given["page"] - 1) - 1),
        )
        params["before_at"], params["before_id"] = cur.fetchone()
    return params


def search_database(server_url: str, reuse: bool) -> tuple[str, bool]:
    return create_database(server_url, reuse, suffix="searchbench")


def search_load(url: str, rows: int, users: int, days: int) -> None:
    bulk_load(
        url,
        SEARCH_LOAD,
        {"rows": rows, "users": users, "days": days, "words": SEARCH_WORDS},
        work_mem="512MB",
        vacuum="VACUUM (ANALYZE) meeting_notes",
    )


def search_bench(server: str, args: argparse.Namespace) -> bool:
    """Load the search data set (unless reused) and time each of SEARCH_QUERIES."""
    from tabulate import tabulate

    from app.db import load_queries
    from app.migrate import upgrade

    url, loaded = search_database(server, args.reuse)
    summary = []
    ok = True
    try:
        upgrade(url)
        if not loaded:
            print(
                f"\nsearch: loading {args.rows} messages of 10 to 16 words ({SEARCH_WORDS} words, Zipf) ..."
            )
            search_load(url, args.rows, args.users, args.days)
        sql = load_queries()["search.search_messages"]
        conn = psycopg2.connect(url)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("SET enable_seqscan = off")  # as app/records/search.py runs it
                for label, given in SEARCH_QUERIES:
                    params = search_params(cur, given)
                    times = time_query(cur, sql, params, args.runs)
                    cur.execute(sql, params)
                    found = len(cur.fetchall())
                    median = statistics.median(times)
                    passed = median < SEARCH_TARGET_MS
                    ok = ok and passed
                    summary.append(
                        (label, found, f"{median:.1f}", f"{max(times):.1f}", "ok" if passed else "SLOW")
                    )
                    if not args.no_plans:
                        cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
                        plan = "\n".join(r[0] for r in cur.fetchall())
                        print(f"\n=== search: {label}: median {median:.1f} ms\n{plan}")
        finally:
            conn.close()
    finally:
        if not args.keep and not args.reuse:
            admin = psycopg2.connect(with_database(server, "postgres"))
            admin.autocommit = True
            with admin.cursor() as cur:
                name = urlparse(url).path.lstrip("/")
                cur.execute(
                    "DROP DATABASE IF EXISTS " + psycopg2.extensions.quote_ident(name, cur) + " WITH (FORCE)"
                )
            admin.close()
    print(
        f"\nSearch target: under {SEARCH_TARGET_MS:.0f} ms each (median of {args.runs} runs after a warm-up)\n"
    )
    print(tabulate(summary, headers=["search", "results", "median ms", "max ms", ""], tablefmt="github"))
    return ok


if __name__ == "__main__":
    raise SystemExit(main())
