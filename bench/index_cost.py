"""What the admin page's contact search indexes add to each webhook INSERT.

    DATABASE_URL=postgresql://postgres@127.0.0.1:55432/meeting_notes_sqlbench \\
        .venv/bin/python bench/index_cost.py [--rows 200000] [--inserts 3000]

Copies `--rows` messages of a loaded database (the one `make bench-sql BENCH_ARGS=--keep` leaves)
into two scratch tables built like meeting_notes, one with and one without the search indexes of
migrations/0011 that remain (contact, phone; migrations/0020 dropped its trigram indexes of the
text and of the transcript, as the page's word search is the records search). Then it inserts one message at a time, each in its own
transaction as the webhook does, alternately into the two tables, so that the machine's load
falls on both alike, and prints the median time of each and the difference. The scratch schema is
dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import psycopg2

SCHEMA = "index_cost"
SEARCH_INDEXES = (
    "meeting_notes_contact_idx",
    "meeting_notes_phone_idx",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--inserts", type=int, default=3000, help="inserts into each table")
    args = parser.parse_args(argv)
    if not os.environ.get("DATABASE_URL"):
        print("set DATABASE_URL to a loaded database (make bench-sql BENCH_ARGS=--keep)", file=sys.stderr)
        return 2
    conn = psycopg2.connect(os.environ["DATABASE_URL"])
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute(
        "SELECT indexname FROM pg_indexes WHERE tablename = 'meeting_notes' AND indexname = ANY(%s)",
        (list(SEARCH_INDEXES),),
    )
    if len(cur.fetchall()) != len(SEARCH_INDEXES):
        print("the search indexes of migrations/0011 are missing: run the migrations", file=sys.stderr)
        return 2
    try:
        print(f"copying {args.rows} messages into two tables ...", flush=True)
        cur.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        cur.execute(f"CREATE SCHEMA {SCHEMA}")
        for table in ("with_search", "without_search"):
            cur.execute(f"CREATE TABLE {SCHEMA}.{table} (LIKE public.meeting_notes INCLUDING ALL)")
            cur.execute(
                f"INSERT INTO {SCHEMA}.{table} OVERRIDING SYSTEM VALUE "  # noqa: S608 (our scratch table)
                "SELECT * FROM public.meeting_notes ORDER BY id LIMIT %s",
                (args.rows,),
            )
            cur.execute(
                "SELECT setval(pg_get_serial_sequence(%s, 'id'), (SELECT max(id) FROM public.meeting_notes))",
                (f"{SCHEMA}.{table}",),
            )
        # The copies' indexes are named after their columns; drop those of the search from one.
        cur.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = %s AND tablename = 'without_search' "
            "AND (indexdef LIKE '%%(contact_phone, created_at)%%' "
            "OR indexdef LIKE '%%(chatwoot_contact_id, created_at)%%')",
            (SCHEMA,),
        )
        dropped = [r[0] for r in cur.fetchall()]
        assert len(dropped) == len(SEARCH_INDEXES), dropped
        for name in dropped:
            cur.execute(f"DROP INDEX {SCHEMA}.{name}")
        cur.execute(f"VACUUM ANALYZE {SCHEMA}.with_search")
        cur.execute(f"VACUUM ANALYZE {SCHEMA}.without_search")
        cur.execute("SELECT max(id) FROM public.meeting_notes")
        template = cur.fetchone()[0]
        times: dict[str, list[float]] = {"with_search": [], "without_search": []}
        for i in range(args.inserts):
            for table in ("with_search", "without_search") if i % 2 else ("without_search", "with_search"):
                started = time.perf_counter()
                cur.execute(
                    f"""
                    INSERT INTO {SCHEMA}.{table} (chatwoot_account_id, chatwoot_message_id, chatwoot_conversation_id,
                        chatwoot_inbox_id, chatwoot_contact_id, source_type, message_type, content_type, content,
                        sender_type, message_created_at, payload, content_fingerprint, transcription_status,
                        classification_status, contact_phone)
                    SELECT 2, 'cost-' || %(i)s, chatwoot_conversation_id, chatwoot_inbox_id, 700000 + %(i)s %% 5000,
                        source_type, message_type, content_type,
                        'Can you draft a post about our quarterly planning, note ' || %(i)s,
                        sender_type, now(), payload, md5(%(i)s::text), 'not_needed', 'pending',
                        '+5511' || lpad((700000 + %(i)s %% 5000)::text, 9, '0')
                    FROM public.meeting_notes WHERE id = %(template)s
                    """,  # noqa: S608 (names of our own scratch tables)
                    {"i": i, "template": template},
                )
                times[table].append((time.perf_counter() - started) * 1e6)
    finally:
        cur.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        conn.close()
    with_search = statistics.median(times["with_search"])
    without = statistics.median(times["without_search"])
    print(f"INSERT + COMMIT, median of {args.inserts} each, into {args.rows} rows:")
    print(f"  without the search indexes  {without:7.0f} us")
    print(f"  with them                   {with_search:7.0f} us")
    print(f"  difference                  {with_search - without:+7.0f} us ({with_search / without:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
