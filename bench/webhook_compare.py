"""The webhook before and after a change, measured in one run: two servers, phases alternating.

    .venv/bin/python bench/webhook_compare.py [--base REV] [--runs 4] [--seconds 8] [--rate 200]
        [--rate-seconds 10] [--workers 4] [--max-regression 5]

`--base` is a git revision (default: where this branch left main): its tree (`git archive`) is served by one gunicorn, this checkout by
another, both on one PostgreSQL and Redis (this checkout's migrations, which older code ignores)
seeded with 50 000 earlier messages, as bench/webhook_bench.py does. Then, per round, each server
gets a full-speed phase and a fixed-rate phase, in the order base, head, head, base, then the
other way round: a machine whose speed drifts during the run favours neither side. The load is
bench/webhook_bench.py's (the same mix, generators and CPU accounting: web, PostgreSQL and Redis
processes, the delivery audit's writer thread and its INSERTs included, each phase's CPU read after
a pause that lets the last second's audit rows reach PostgreSQL).

It prints the medians per side and the change: deliveries made durable per second at full
speed, server CPU per delivery, p99 at the fixed rate; then head / base round by round (each
round's phases ran next to each other, so the machine's speed of the moment cancels out). Exit
status 1 when the median of those ratios says throughput or CPU per delivery is more than
--max-regression percent worse (p99 is shown, not judged: at 200/s it moves by milliseconds
between identical runs on this machine).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "scripts"))

import devstack  # noqa: E402
import webhook_bench as wb  # noqa: E402

AUDIT_FLUSH_WAIT = 1.5
"""Seconds waited before a phase's CPU is read: the delivery audit writes its rows every second."""


def export_tree(revision: str, into: Path) -> None:
    """The tree of a git revision, as files (nothing in the repository changes)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", revision], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)


class Side:
    """One gunicorn serving one tree, on the shared PostgreSQL and Redis."""

    def __init__(self, name: str, tree: Path, env: dict[str, str], workers: int, log: Path):
        self.name = name
        self.tree = tree
        self.port = devstack.free_port()
        self.proc = wb.start_gunicorn(
            tree, {**env, "PYTHONPATH": str(tree)}, self.port, workers, log, name=name
        )

    def cpu(self, shared: list[int]) -> Any:
        def parts() -> dict[str, float]:
            time.sleep(AUDIT_FLUSH_WAIT)
            names = ["web", "postgres", "redis"]
            roots = [self.proc.pid, *shared]
            found = {n: wb.process_tree_cpu([pid]) for n, pid in zip(names, roots, strict=False)}
            return {**found, wb.STEAL: wb.steal_seconds()}

        return parts

    def stop(self) -> None:
        devstack.stop_pid(self.proc.pid, timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--base",
        help="git revision measured against (default: where this branch left main, `git merge-base HEAD main`)",
    )
    parser.add_argument(
        "--runs", type=int, default=4, help="rounds (default 4; each side gets 2 phases a round)"
    )
    parser.add_argument("--seconds", type=float, default=8, help="length of a full-speed phase")
    parser.add_argument("--rate", type=float, default=200, help="requests/s of the fixed-rate phases")
    parser.add_argument("--rate-seconds", type=float, default=10, help="length of a fixed-rate phase")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn sync workers per side")
    parser.add_argument("--clients", type=int, default=12, help="requests in flight at full speed")
    parser.add_argument("--max-regression", type=float, default=5.0, help="percent (default 5)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (the servers' logs)")
    args = parser.parse_args(argv)
    if not args.base:
        args.base = subprocess.run(
            ["git", "-C", str(ROOT), "merge-base", "HEAD", "main"], capture_output=True, text=True, check=True
        ).stdout.strip()
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        if args.base == head:
            parser.error("this checkout is where main is: name the revision to compare with, --base REV")
    known = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{args.base}^{{commit}}"],
        capture_output=True,
        text=True,
    )
    if known.returncode != 0:
        parser.error(f"--base {args.base}: not a commit of this repository")

    state = Path(tempfile.mkdtemp(prefix="webhook-compare-"))
    base_tree = state / "base"
    base_tree.mkdir()
    export_tree(args.base, base_tree)
    sides: list[Side] = []
    server = wb.Server(args.workers, keep=False)
    results: dict[str, dict[str, list[wb.PhaseResult]]] = {
        "base": {"full": [], "rate": []},
        "head": {"full": [], "rate": []},
    }
    try:
        server.start()  # PostgreSQL, Redis, migrations and a gunicorn of this checkout (unused)
        server.seed_history(wb.HISTORY_ROWS)
        env = dict(server.env)
        if server.proc:
            devstack.stop_pid(server.proc.pid, timeout=10)
            server.proc = None
        shared = server.pids()
        sides = [
            Side("base", base_tree, env, args.workers, state / "base.log"),
            Side("head", ROOT, env, args.workers, state / "head.log"),
        ]
        print(f"base: {args.base} ({base_tree}), head: {ROOT}; {args.workers} sync workers each")
        next_id = int(time.time()) * 1000 + 10**9
        for side in sides:  # warm-up: connections, imports, caches
            warm = wb.Deliveries(side.port, next_id, 1)
            next_id += 10**7
            for _ in range(200):
                wb.send(side.port, warm.next()[1])
        for run in range(args.runs):
            order = sides + sides[::-1] if run % 2 == 0 else sides[::-1] + sides
            for side in order:
                result = wb.full_speed(
                    side.port, "webhook", args.seconds, args.clients, first_id=next_id, cpu=side.cpu(shared)
                )
                next_id += 10**9
                results[side.name]["full"].append(result)
            for side in order:
                result = wb.fixed_rate(
                    side.port, "webhook", args.rate, args.rate_seconds, first_id=next_id, cpu=side.cpu(shared)
                )
                next_id += 10**8
                results[side.name]["rate"].append(result)
            print(f"round {run + 1} of {args.runs} done", flush=True)
        audited = _audited(env)
    finally:
        for side in sides:
            side.stop()
        server.stop()
        if args.keep:
            print(f"logs in {state}")
        else:
            shutil.rmtree(state, ignore_errors=True)

    def summary(name: str) -> dict[str, float]:
        full = wb._judged(results[name]["full"])
        rate = wb._judged(results[name]["rate"])
        return {
            "durable/s": statistics.median(wb.describe(r, True)["durable/s"] for r in full),
            "CPU ms/delivery": statistics.median(wb.describe(r, True)["server CPU ms/req"] for r in full),
            "p99 ms at rate": statistics.median(r.percentile(99) for r in rate),
            "CPU ms/delivery at rate": statistics.median(
                wb.describe(r, True)["server CPU ms/req"] for r in rate
            ),
        }

    print()
    columns = [
        "phase",
        "requests",
        "req/s",
        "durable/s",
        "p99 ms",
        "server CPU ms/req",
        "web/pg/redis ms",
        "steal %",
    ]
    print("| side | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, kinds in results.items():
        for phase in kinds["full"] + kinds["rate"]:
            row = wb.describe(phase, True)
            print(f"| {name} | " + " | ".join(wb._fmt(row.get(c)) for c in columns) + " |")
    outcomes = {
        name: sum((r.outcomes for rs in kinds.values() for r in rs), wb.Counter())
        for name, kinds in results.items()
    }
    print(f"\noutcomes: { ({k: dict(v) for k, v in outcomes.items()}) }")
    base, head = summary("base"), summary("head")
    print()
    print("| | base | head | change |")
    print("|---|---|---|---|")
    for key in base:
        change = 100 * (head[key] - base[key]) / base[key] if base[key] else float("nan")
        print(f"| {key} | {base[key]:.2f} | {head[key]:.2f} | {change:+.1f} % |")
    # Each round's two phases of one side against the other side's two, run next to them: the
    # machine's speed at that moment is the same for both, so the ratio is what the change did.
    paired = {
        "durable/s": _rounds(results, "full", lambda r: wb.describe(r, True)["durable/s"]),
        "CPU ms/delivery": _rounds(results, "full", lambda r: wb.describe(r, True)["server CPU ms/req"]),
        "CPU ms/delivery at rate": _rounds(
            results, "rate", lambda r: wb.describe(r, True)["server CPU ms/req"]
        ),
    }
    print("\nhead / base, round by round (the phases run next to each other):")
    for key, ratios in paired.items():
        shown = ", ".join(f"{r:.3f}" for r in ratios)
        print(f"  {key}: median {statistics.median(ratios):.3f} ({shown})")
    print(f"\ndelivery audit rows written by head: {audited}")
    failures = []
    if statistics.median(paired["durable/s"]) < 1 - args.max_regression / 100:
        failures.append(f"durable deliveries/s fell by more than {args.max_regression:g} % (paired median)")
    if statistics.median(paired["CPU ms/delivery"]) > 1 + args.max_regression / 100:
        failures.append(
            f"server CPU per delivery rose by more than {args.max_regression:g} % (paired median)"
        )
    bad = {
        s: n
        for side in results.values()
        for rs in side.values()
        for r in rs
        for s, n in r.statuses.items()
        if s != 200
    }
    if bad:
        failures.append(f"non-200 answers: {bad}")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    if not failures:
        print(f"ok: within {args.max_regression:g} % of {args.base}")
    return 1 if failures else 0


def _rounds(results: dict[str, dict[str, list[wb.PhaseResult]]], kind: str, value: Any) -> list[float]:
    """head / base of the sum of each round's two phases of a kind."""
    base, head = results["base"][kind], results["head"][kind]
    return [
        (value(head[i]) + value(head[i + 1])) / (value(base[i]) + value(base[i + 1]))
        for i in range(0, min(len(base), len(head)) - 1, 2)
    ]


def _audited(env: dict[str, str]) -> int | str:
    import psycopg2

    with psycopg2.connect(env["DATABASE_URL"]) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('webhook_deliveries') IS NOT NULL")
        if not cur.fetchone()[0]:
            return "none (no audit table)"
        cur.execute("SELECT count(*) FROM webhook_deliveries")
        return int(cur.fetchone()[0])


if __name__ == "__main__":
    raise SystemExit(main())
