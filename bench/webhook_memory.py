"""Web worker memory with a large delivery in flight: `python bench/webhook_memory.py [--mb 32]`.

Starts its own PostgreSQL and Redis, one gunicorn sync worker, and posts signed email deliveries
(the repository's email fixture with its HTML part inflated) of 1 MB, 8 MB and the size asked
(default 32 MB, MAX_WEBHOOK_BYTES). It samples the worker's resident memory every 5 ms while each
is in flight and prints the peak beside the worker's idle RSS, and the same for a forged delivery
of the largest size (never parsed). Exit status 1 when a delivery is not accepted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from webhook_bench import SECRET, Server  # noqa: E402

from app.chatwoot.signatures import sign_headers  # noqa: E402


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def worker_pid(master: int) -> int:
    for child in Path("/proc").iterdir():
        if child.name.isdigit():
            try:
                stat = (child / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == master:
                return int(child.name)
    raise RuntimeError("no gunicorn worker")


def email(megabytes: float, message_id: int) -> bytes:
    payload = json.loads((ROOT / "tests/fixtures/chatwoot/message_created__incoming_email.json").read_text())
    payload["id"] = message_id
    paragraph = "<p>Onboarding in four days: what we changed, week by week.</p>"
    html = "<html><body>" + paragraph * int(megabytes * 1024 * 1024 / len(paragraph) / 2) + "</body></html>"
    for holder in (payload, payload["conversation"]["messages"][0]):
        holder["content_attributes"]["email"]["html_content"] = {"full": html, "reply": "", "quoted": ""}
    return json.dumps(payload).encode()


def post(port: int, body: bytes, secret: str) -> tuple[int, float]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/webhooks/chatwoot",
        data=body,
        headers=sign_headers(secret, body),
        method="POST",
    )
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    return status, time.perf_counter() - started


def measure(port: int, pid: int, body: bytes, secret: str) -> tuple[int, int, float]:
    peak = [rss_kib(pid)]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_kib(pid))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    status, seconds = post(port, body, secret)
    done.set()
    sampler.join()
    return status, peak[0], seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=32.0)
    args = parser.parse_args(argv)
    server = Server(workers=1, keep=False)
    server.start()
    ok = True
    try:
        pid = worker_pid(server.proc.pid if server.proc else 0)
        post(server.port, email(0.01, 1), SECRET)  # warm the worker (imports, connections)
        idle = rss_kib(pid)
        print(f"worker idle RSS: {idle / 1024:.0f} MiB")
        print("| delivery | answer | worker RSS peak | over idle | seconds |")
        print("|---|---|---|---|---|")
        # The forged one first: a worker's RSS does not shrink back at once after a large delivery.
        body = email(args.mb * 0.97, 999)
        status, peak, seconds = measure(server.port, pid, body, "not-the-secret")
        ok &= status == 401
        print(
            f"| {len(body) / 1048576:.1f} MiB, wrong signature | {status} | {peak / 1024:.0f} MiB | "
            f"{(peak - idle) / 1024:.0f} MiB | {seconds:.2f} |"
        )
        for index, size in enumerate((1.0, 8.0, args.mb)):
            body = email(size * 0.97, 100 + index)
            status, peak, seconds = measure(server.port, pid, body, SECRET)
            ok &= status == 200
            print(
                f"| {len(body) / 1048576:.1f} MiB email | {status} | {peak / 1024:.0f} MiB | "
                f"{(peak - idle) / 1024:.0f} MiB | {seconds:.2f} |"
            )
    finally:
        server.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("NO_GCE_CHECK", "true")
    raise SystemExit(main())
