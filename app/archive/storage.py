"""Google Cloud Storage: bucket names, buckets created on first use, append-only objects.

Each user's archive lives in a bucket of its own, named by a keyed hash of the user key so that a
bucket name says nothing about whom it belongs to. Buckets are created by the workers (never in
the request path) with their lifecycle, access and soft-delete settings, at the rate GCS allows,
read back (and set again where the server dropped them), and remembered in `gcs_buckets` and in
each process. `flask storage audit` finds buckets whose settings drifted and sets them again.

Objects are written with `if_generation_match=0`: an object that is already there is never
overwritten. It counts as written only when it holds the same thing (a retry of our own
write); see `write_bytes`.

Object names (the `whatsapp-messages/` prefix is the seed guide's and holds every channel):
- a message of the default account (CHATWOOT_ACCOUNT_ID):
  `whatsapp-messages/<YYYY-MM-DD>/<message id>.json`;
- a message of any other account (or of every account when CHATWOOT_ACCOUNT_ID is unset):
  `whatsapp-messages/accounts/<account id>/<YYYY-MM-DD>/<message id>.json`.
The second segment is a date in the first form and `accounts` in the second, so the two never
meet. Should the short name of a default-account message be taken by another message (the default
account was changed, say), the message goes to its account-qualified name instead. Attachments,
the transcript and updates live under the message's name without `.json`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote

import certifi
import google_crc32c
import requests
import urllib3
from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials
from google.auth.transport.requests import AuthorizedSession
from google.auth.transport.urllib3 import AuthorizedHttp
from google.cloud.storage.retry import DEFAULT_RETRY
from limits import parse_many
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

from app import context
from app.archive.gcs_client import project_id
from app.db import queries
from app.users import tombstones

if TYPE_CHECKING:
    from google.cloud.storage import Bucket, Client

log = logging.getLogger(__name__)

SERVICE_LABELS = {"service": "meeting-notes", "component": "archive"}
"""Labels of every bucket the service creates."""
LIFECYCLE = ((30, "NEARLINE"), (90, "COLDLINE"), (365, "ARCHIVE"))
"""(age in days, storage class) transitions of every bucket."""
MESSAGES_PREFIX = "whatsapp-messages"
"""The seed guide's object prefix; it holds the messages of every channel."""
ACCOUNTS_SEGMENT = "accounts"
"""`whatsapp-messages/accounts/<account id>/...`: the messages of accounts other than the default."""
CALL_RETRY_SECONDS = 10.0
"""Seconds one GCS call retries transient errors before the job fails and RQ retries it later."""
CALL_TIMEOUT = (5.0, 60.0)
"""(connect, read) seconds of one GCS request."""
INLINE_WAIT_SECONDS = 3.0
"""Longest a job sleeps for a bucket-creation slot; beyond that it is scheduled again later."""
WAITING_KEY = "meeting-notes:gcs:buckets-waiting"
"""Redis sorted set of bucket names waiting for a creation slot (score: first seen)."""
WAITING_TTL = 900
"""Seconds after which a waiting entry is forgotten (its job died or was erased)."""
LIMIT_KEY = "gcs-bucket-create"
"""Key of the shared bucket-creation rate (GCS_BUCKET_CREATE_RATE)."""
UPDATE_LIMIT_KEY = "gcs-bucket-update"
"""Key of the rate of bucket settings changes made by `flask storage audit --fix` (same rate)."""

_BUCKET_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_SAFE_ID_CHARS = "-_.~"


class StorageError(Exception):
    """Base of the archive's storage errors."""


class PermanentStorageError(StorageError):
    """Retrying will not help: an operator has to act (the row goes to `error`)."""


class ForeignBucket(PermanentStorageError):
    """The bucket name exists but belongs to another project: no data is ever written to it."""


class BucketOwnershipUnknown(PermanentStorageError):
    """A bucket name exists and our project number could not be found to compare with."""


class ObjectConflict(PermanentStorageError):
    """An object of that name exists and holds something else (another message): never overwritten."""


class BucketCreationThrottled(StorageError):
    """No bucket-creation slot is free now; try again after `retry_after` seconds."""

    def __init__(self, name: str, retry_after: float):
        super().__init__(f"bucket creation throttled; retry in {retry_after:.1f} s")
        self.name = name
        self.retry_after = retry_after


# ------------------------------------------------------------------------------------------
# names


def bucket_name(user_key: str, secret: str | None = None, prefix: str | None = None) -> str:
    """`<GCS_BUCKET_PREFIX>-` + the first 32 hex characters of HMAC-SHA256(BUCKET_HASH_SECRET, user key)."""
    if not user_key:
        raise ValueError("a user key is required")
    s = context.settings()
    key = (s.bucket_hash_secret if secret is None else secret).encode()
    digest = hmac.new(key, user_key.encode("utf-8"), hashlib.sha256).hexdigest()[:32]
    return f"{s.gcs_bucket_prefix if prefix is None else prefix}-{digest}"


def valid_bucket_name(name: str) -> bool:
    """GCS's rules for a bucket name without dots."""
    return (
        bool(_BUCKET_NAME_RE.match(name))
        and "--" not in name
        and not name.startswith("goog")
        and "google" not in name
        and "g00gle" not in name
    )


def message_prefix(
    created_at: datetime, message_id: str | int, account_id: int | None = None, *, qualified: bool = False
) -> str:
    """The name of a message's objects without `.json` (see the module's docstring).

    `whatsapp-messages/<YYYY-MM-DD>/<message id>` (the UTC day the message was created) for the
    default account; `whatsapp-messages/accounts/<account id>/<YYYY-MM-DD>/<message id>` for any
    other account, or for any account with `qualified`.
    """
    moment = created_at if created_at.tzinfo else created_at.replace(tzinfo=UTC)
    day = moment.astimezone(UTC).date().isoformat()
    default = context.settings().chatwoot_account_id
    if account_id is not None and (qualified or default is None or int(account_id) != default):
        return f"{MESSAGES_PREFIX}/{ACCOUNTS_SEGMENT}/{int(account_id)}/{day}/{safe_id(message_id)}"
    return f"{MESSAGES_PREFIX}/{day}/{safe_id(message_id)}"


def note_prefix(row: Any) -> str:
    """The object name prefix of an archived meeting_notes row: its JSON's name without `.json`.

    Taken from `gcs_storage_path` (where the message really is, whatever rule named it then);
    from the row's account, day and message id when it has no path yet.
    """
    path = row.get("gcs_storage_path")
    if path:
        _, name = parse_gs_uri(str(path))
        return name.removesuffix(".json")
    return message_prefix(
        row.get("message_created_at") or row["created_at"],
        row["chatwoot_message_id"],
        row.get("chatwoot_account_id"),
    )


def safe_id(value: str | int) -> str:
    """An id as one path segment: Chatwoot's integers as they are; anything else percent-encoded."""
    encoded = quote(str(value), safe=_SAFE_ID_CHARS)
    if encoded in (".", ".."):
        return encoded.replace(".", "%2E")
    return encoded or "_"


def message_object(prefix: str) -> str:
    return f"{prefix}.json"


def attachment_object(prefix: str, attachment_id: int | str, extension: str) -> str:
    return f"{prefix}/{safe_id(attachment_id)}{extension}"


def update_object(prefix: str, fingerprint: str) -> str:
    return f"{prefix}/updates/{safe_id(fingerprint)}.json"


def transcript_object(prefix: str) -> str:
    return f"{prefix}/transcript.json"


def gs_uri(bucket: str, object_name: str) -> str:
    return f"gs://{bucket}/{object_name}"


def parse_gs_uri(uri: str) -> tuple[str, str]:
    """(bucket, object) of `gs://bucket/object`."""
    if not uri.startswith("gs://") or "/" not in uri[5:]:
        raise ValueError(f"not a gs:// object URI: {uri!r}")
    bucket, _, name = uri[5:].partition("/")
    return bucket, name


# ------------------------------------------------------------------------------------------
# buckets


_known: weakref.WeakKeyDictionary[Client, set[str]] = weakref.WeakKeyDictionary()
"""Ready bucket names, per GCS client (so per process and per settings)."""
_known_lock = threading.Lock()
_project_numbers: weakref.WeakKeyDictionary[Client, str] = weakref.WeakKeyDictionary()


_PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy")


def _known_set(client: Client) -> set[str]:
    with _known_lock:
        found = _known.get(client)
        if found is None:
            found = set()
            _known[client] = found
            _tune(client)
        return found


def _tune(client: Client) -> None:
    """Without proxy settings, skip the lookups `requests` makes on every call (.netrc, proxy
    variables): about a millisecond per object written."""
    if not any(os.environ.get(v) for v in _PROXY_VARIABLES):
        client._http.trust_env = False


def is_known(name: str) -> bool:
    """True when this process already knows the bucket is ready (no call made)."""
    return name in _known_set(context.gcs())


def forget_bucket(name: str) -> None:
    """Forget a bucket in this process and in the database (it was deleted, or has vanished)."""
    _known_set(context.gcs()).discard(name)
    context.db().execute("archive.bucket_forget", {"bucket_name": name})


def configure_new_bucket(bucket: Bucket) -> Bucket:
    """Set what every bucket of ours gets: lifecycle, uniform access, no public access, the service's
    labels and the soft-delete retention (SOFT_DELETE_RETENTION_SECONDS); nothing is sent yet."""
    return apply_required_settings(bucket, keep_other_rules=False)


def apply_required_settings(bucket: Bucket, keep_other_rules: bool = True) -> Bucket:
    """Our settings on a bucket object (then `patch()` or `create()` sends them).

    Storage-class transitions are replaced by ours; other lifecycle rules (a Delete rule an admin
    added) are kept when `keep_other_rules`; labels of ours are set, others kept.
    """
    others = [
        dict(rule)
        for rule in (bucket.lifecycle_rules if keep_other_rules else [])
        if rule.get("action", {}).get("type") != "SetStorageClass"
    ]
    bucket.lifecycle_rules = others
    for age, storage_class in LIFECYCLE:
        bucket.add_lifecycle_set_storage_class_rule(storage_class, age=age)
    bucket.iam_configuration.uniform_bucket_level_access_enabled = True
    bucket.iam_configuration.public_access_prevention = "enforced"
    bucket.labels = {**(bucket.labels or {}), **SERVICE_LABELS}
    bucket.soft_delete_policy.retention_duration_seconds = context.settings().soft_delete_retention_seconds
    return bucket


def bucket_differences(bucket: Bucket) -> list[str]:
    """How a bucket's settings (as read from the server) differ from what we require; [] when none."""
    found: list[str] = []
    transitions = sorted(
        (int(r.get("condition", {}).get("age", -1)), str(r.get("action", {}).get("storageClass")))
        for r in bucket.lifecycle_rules
        if r.get("action", {}).get("type") == "SetStorageClass"
    )
    if transitions != sorted(LIFECYCLE):
        shown = ", ".join(f"{cls} {age}" for age, cls in transitions) or "none"
        found.append(f"lifecycle transitions {shown} (want NEARLINE 30, COLDLINE 90, ARCHIVE 365)")
    iam = bucket.iam_configuration
    if not iam.uniform_bucket_level_access_enabled:
        found.append("uniform bucket-level access off")
    if iam.public_access_prevention != "enforced":
        found.append(f"public access prevention {iam.public_access_prevention or 'unset'}")
    labels = bucket.labels or {}
    for key, value in SERVICE_LABELS.items():
        if labels.get(key) != value:
            found.append(f"label {key}={labels.get(key) or '(none)'} (want {value})")
    want = context.settings().soft_delete_retention_seconds
    retention = bucket.soft_delete_policy.retention_duration_seconds
    # GCS leaves the policy out when soft delete is off.
    if int(retention or 0) != want:
        found.append(f"soft delete {int(retention or 0)} s (want {want} s)")
    return found


def _call_retry() -> Any:

    return DEFAULT_RETRY.with_timeout(CALL_RETRY_SECONDS)


def ensure_bucket(name: str) -> Bucket:
    """The bucket, created on first use with our settings; remembered once it is ready.

    Raises ForeignBucket when the name belongs to another project, BucketCreationThrottled when
    no creation slot is free for a while (the caller tries again later).
    """
    client = context.gcs()
    known = _known_set(client)
    if name in known:
        return client.bucket(name)
    if not valid_bucket_name(name):
        raise PermanentStorageError(f"invalid bucket name {name!r}")
    with _creation_lock(name):
        if name in known:  # made by another thread meanwhile
            return client.bucket(name)
        row = context.db().fetch_one("archive.bucket_get", {"bucket_name": name})
        if row is not None:
            if row["state"] == "foreign":
                raise ForeignBucket(f"bucket {name} belongs to another project")
            known.add(name)
            return client.bucket(name)
        bucket = _create_unless_erased(client, name)
        known.add(name)
        return bucket


_creating: dict[str, threading.Lock] = {}


def _creation_lock(name: str) -> threading.Lock:
    """One lock per bucket name in this process: threads archiving messages of one new user wait
    for the first to create the bucket, instead of each asking for a creation slot."""
    with _known_lock:
        found = _creating.get(name)
        if found is None:
            if len(_creating) > 10_000:
                _creating.clear()
            found = _creating[name] = threading.Lock()
        return found


def _create_or_adopt(client: Client, name: str) -> Bucket:

    settings = context.settings()
    _acquire_creation_slot(name)
    # Another process may have created it while this one waited for a slot.
    row = context.db().fetch_one("archive.bucket_get", {"bucket_name": name})
    if row is not None:
        if row["state"] == "foreign":
            raise ForeignBucket(f"bucket {name} belongs to another project")
        return client.bucket(name)
    bucket = configure_new_bucket(client.bucket(name))
    try:
        bucket.create(
            project=project_id(settings),
            location=settings.gcs_location,
            timeout=CALL_TIMEOUT,
            retry=_call_retry(),
        )
    except gexc.Conflict:
        return _adopt(client, name)
    except gexc.TooManyRequests:
        raise BucketCreationThrottled(name, _slot_seconds()) from None
    # The answer to the create is the bucket as the server made it: some servers (emulators)
    # ignore settings given at creation. Set again what is missing, once.
    if bucket_differences(bucket):
        _patch_settings(bucket)
    project_number = str(bucket.project_number) if bucket.project_number is not None else None
    _record_bucket(name, "ready", "created", project_number)
    log.info("bucket created", extra={"bucket": name, "location": settings.gcs_location})
    return bucket


def _patch_settings(bucket: Bucket) -> list[str]:
    """Send our settings to an existing bucket; return what still differs after the answer."""
    apply_required_settings(bucket)
    bucket.patch(timeout=CALL_TIMEOUT, retry=_call_retry())
    left = bucket_differences(bucket)
    if left:
        level = logging.DEBUG if context.settings().uses_gcs_emulator else logging.WARNING
        log.log(
            level, "bucket settings not kept by the server", extra={"bucket": bucket.name, "differs": left}
        )
    return left


def _adopt(client: Client, name: str) -> Bucket:
    """A 409 on create: use the bucket only if it belongs to our project."""

    try:
        existing = client.get_bucket(name, timeout=CALL_TIMEOUT, retry=_call_retry())
    except gexc.Forbidden:
        return _refuse(name, None, "exists and is not readable by this service")
    ours = our_project_number(client)
    theirs = str(existing.project_number) if existing.project_number is not None else None
    if ours is None:
        if not context.settings().uses_gcs_emulator:
            log.error(
                "bucket exists and the project number is unknown; set GCS_PROJECT_NUMBER",
                extra={"bucket": name},
            )
            raise BucketOwnershipUnknown(
                f"bucket {name} exists; set GCS_PROJECT_NUMBER to tell whether it is ours"
            )
        ours = theirs  # an emulator serves a single project
    if theirs != ours:
        return _refuse(name, theirs, f"belongs to project number {theirs}, not ours")
    if bucket_differences(existing):
        _patch_settings(existing)
    _record_bucket(name, "ready", "adopted", theirs)
    log.warning("bucket already existed in our project: adopted", extra={"bucket": name})
    return existing


def _refuse(name: str, project_number: str | None, reason: str) -> Bucket:
    _record_bucket(name, "foreign", "refused", project_number, error_details=reason[:200])
    log.error(
        "BUCKET NAME TAKEN BY ANOTHER PROJECT: no data will be written to it",
        extra={"bucket": name, "reason": reason},
    )
    raise ForeignBucket(f"bucket {name} {reason}")


def _record_bucket(
    name: str, state: str, how: str, project_number: str | None, error_details: str | None = None
) -> None:
    with context.db().transaction() as cur:
        cur.execute(
            queries["archive.bucket_record"],
            {
                "bucket_name": name,
                "state": state,
                "how": how,
                "project_number": project_number,
                "error_details": error_details,
            },
        )
        if state == "ready":
            cur.execute(queries["archive.user_bucket_created"], {"bucket_name": name})


def our_project_number(client: Client | None = None) -> str | None:
    """GCS_PROJECT_NUMBER, else what GCS says (its service agent is service-<number>@...),
    else the number on a bucket we created ourselves; None when nothing tells."""

    settings = context.settings()
    if settings.gcs_project_number:
        return settings.gcs_project_number
    client = client or context.gcs()
    cached = _project_numbers.get(client)
    if cached:
        return cached
    found: str | None = None
    try:
        email = client.get_service_account_email(timeout=CALL_TIMEOUT, retry=None)
        match = re.match(r"service-(\d+)@", email or "")
        found = match.group(1) if match else None
    except (gexc.GoogleAPICallError, ValueError, KeyError):
        found = None
    if found is None:
        row = context.db().fetch_one("archive.bucket_own_project_number")
        found = row["project_number"] if row else None
    if found:
        _project_numbers[client] = found
    return found


# -- the creation rate (shared by every worker through Redis) --------------------------------

_limiters: dict[tuple[int, str, str], tuple[Any, Any]] = {}


def _limiter() -> tuple[Any, Any]:

    settings = context.settings()
    redis = context.redis()
    key = (os.getpid(), settings.redis_url, settings.gcs_bucket_create_rate)
    found = _limiters.get(key)
    if found is None:
        storage = RedisStorage(
            settings.redis_url, connection_pool=redis.connection_pool, key_prefix="meeting-notes:limits"
        )
        items = parse_many(settings.gcs_bucket_create_rate)
        found = (MovingWindowRateLimiter(storage), items)
        _limiters.clear()
        _limiters[key] = found
    return found


def _slot_seconds() -> float:
    """Average seconds between two creations at the configured rate."""
    _, items = _limiter()
    return float(max(item.get_expiry() / item.amount for item in items))


def _acquire_creation_slot(name: str, key: str = LIMIT_KEY, wait_seconds: float | None = None) -> None:
    """Take a bucket-creation slot, sleeping a little if one frees soon; else throttle.

    Waiting names queue in Redis by arrival, so deferred jobs come back one slot apart instead
    of all at once.
    """
    limiter, items = _limiter()
    redis = context.redis()
    waiting = WAITING_KEY if key == LIMIT_KEY else f"{WAITING_KEY}:{key}"
    deadline = time.monotonic() + (INLINE_WAIT_SECONDS if wait_seconds is None else wait_seconds)
    while True:
        blocked = [item for item in items if not limiter.test(item, key)]
        if not blocked and all(limiter.hit(item, key) for item in items):
            redis.zrem(waiting, name)
            return
        now = time.time()
        reset = max(limiter.get_window_stats(item, key).reset_time for item in items)
        wait = max(0.05, reset - now)
        pipe = redis.pipeline()
        pipe.zremrangebyscore(waiting, 0, now - WAITING_TTL)
        pipe.zadd(waiting, {name: now}, nx=True)
        pipe.zrank(waiting, name)
        rank = int(pipe.execute()[2] or 0)
        if rank == 0 and time.monotonic() + wait <= deadline:
            time.sleep(wait)
            continue
        raise BucketCreationThrottled(name, wait + rank * _slot_seconds())


def wait_for_update_slot(name: str, patience: float = 600.0) -> None:
    """Block until a bucket settings change may be made (the shared rate), for a command line."""
    deadline = time.monotonic() + patience
    while True:
        try:
            _acquire_creation_slot(name, key=UPDATE_LIMIT_KEY, wait_seconds=0.0)
            return
        except BucketCreationThrottled as exc:
            if time.monotonic() + exc.retry_after > deadline:
                raise
            time.sleep(min(exc.retry_after, 5.0))


def set_required_settings(bucket: Bucket) -> list[str]:
    """Send our settings to an existing bucket (`flask storage audit --fix`); return what still differs."""
    return _patch_settings(bucket)


def delete_bucket(name: str) -> int:
    """Delete every object of the bucket, then the bucket; return the objects deleted (0 if none)."""

    client = context.gcs()
    deleted = 0
    try:
        deleted = _delete_live(client, name)
        client.bucket(name).delete(timeout=CALL_TIMEOUT, retry=_call_retry())
    except gexc.NotFound:
        pass
    forget_bucket(name)
    log.info("bucket deleted", extra={"bucket": name, "objects": deleted})
    return deleted


# ------------------------------------------------------------------------------------------
# objects


@dataclass(frozen=True)
class Written:
    uri: str
    created: bool
    """False when the object was already there (an earlier run wrote it)."""


Same = Callable[[bytes], bool]
"""Whether an existing object's content is what we meant to write (a retry of our own write)."""


def _write(bucket: Bucket, object_name: str, upload: Any, same: Callable[[], bool] | None = None) -> Written:
    """Run an upload with if_generation_match=0.

    A 412 (the name is taken) is success when `same` is None or `same()` says the existing object
    is ours; otherwise ObjectConflict, and nothing is overwritten.
    """

    for attempt in (1, 2):
        try:
            upload(bucket)
            return Written(gs_uri(bucket.name, object_name), True)
        except gexc.PreconditionFailed:
            if same is None or same():
                return Written(gs_uri(bucket.name, object_name), False)
            raise ObjectConflict(f"object {object_name} exists and holds another message") from None
        except gexc.NotFound:
            # The bucket vanished (deleted outside, or an emulator restarted): make it again once.
            if attempt == 2:
                raise
            log.warning("bucket missing on upload; creating it again", extra={"bucket": bucket.name})
            forget_bucket(bucket.name)
            bucket = ensure_bucket(bucket.name)
    raise AssertionError("unreachable")


def put_bytes(bucket: Bucket, object_name: str, data: bytes, content_type: str) -> str:
    """Write an object unless it exists; return `gs://bucket/object`."""
    return write_bytes(bucket, object_name, data, content_type).uri


def write_bytes(
    bucket: Bucket, object_name: str, data: bytes, content_type: str, same: Same | None = None
) -> Written:
    """Write an object unless it exists, in one request (its CRC32C checked by GCS); an existing
    object counts as written when `same(its content)`, or always without `same`."""

    def upload(target: Bucket) -> None:
        _call_retry()(_upload_media)(target.name, object_name, data, content_type)

    check = None if same is None else (lambda: same(read_bytes(bucket.name, object_name)))
    return _write(bucket, object_name, upload, check)


def put_json(bucket: Bucket, object_name: str, obj: Any) -> str:
    """Write a JSON object (UTF-8) unless it exists; return `gs://bucket/object`."""
    return write_json(bucket, object_name, obj).uri


def json_bytes(obj: Any) -> bytes:
    """How the archive writes JSON: compact UTF-8."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def write_json(bucket: Bucket, object_name: str, obj: Any, same: Same | None = None) -> Written:
    return write_bytes(bucket, object_name, json_bytes(obj), "application/json; charset=utf-8", same)


def put_file(bucket: Bucket, object_name: str, fileobj: IO[bytes], size: int, content_type: str) -> Written:
    """Stream a file to an object unless it exists (resumable upload above 8 MiB)."""

    def upload(target: Bucket) -> None:
        fileobj.seek(0)
        target.blob(object_name).upload_from_file(
            fileobj,
            size=size,
            content_type=content_type,
            if_generation_match=0,
            timeout=CALL_TIMEOUT,
            retry=_call_retry(),
            rewind=False,
        )

    return _write(bucket, object_name, upload)


# -- the upload connection of each thread ----------------------------------------------------

_sessions = threading.local()


def _session() -> tuple[str, Any]:
    """(API base URL, HTTP client) of this thread, for the process's GCS client and settings.

    One client per thread: archive jobs upload from a pool of threads. It is urllib3's, with the
    client's credentials (google-auth's AuthorizedHttp): a `requests` session costs about twice
    the CPU per upload. With proxy variables set, a `requests` session honours them.
    """
    client = context.gcs()
    found = getattr(_sessions, "current", None)
    if found is not None and found[0] is client:
        return found[1], found[2]

    credentials = client._credentials
    http: Any
    if any(os.environ.get(v) for v in _PROXY_VARIABLES):
        http = (
            requests.Session()
            if isinstance(credentials, AnonymousCredentials)
            else AuthorizedSession(credentials)  # type: ignore[no-untyped-call]
        )
    else:
        pool = urllib3.PoolManager(num_pools=4, maxsize=2, retries=False, ca_certs=certifi.where())
        if isinstance(credentials, AnonymousCredentials):
            http = pool
        else:
            http = AuthorizedHttp(credentials, http=pool)  # type: ignore[no-untyped-call]
    base = client._connection.get_api_base_url_for_mtls().rstrip("/")
    _sessions.current = (client, base, http)
    return base, http


def _post(http: Any, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    """POST with either kind of client of `_session`; connection failures as ConnectionError."""

    if hasattr(http, "post"):  # a requests session (proxies)
        response = http.post(url, data=body, headers=headers, timeout=CALL_TIMEOUT)
        return int(response.status_code), bytes(response.content)
    try:
        answer = http.request(
            "POST",
            url,
            body=body,
            headers=headers,
            timeout=urllib3.Timeout(connect=CALL_TIMEOUT[0], read=CALL_TIMEOUT[1]),
            retries=False,
        )
    except urllib3.exceptions.HTTPError as exc:
        raise ConnectionError(f"GCS request failed ({type(exc).__name__})") from exc
    return int(answer.status), bytes(answer.data)


def _upload_media(bucket_name_: str, object_name: str, data: bytes, content_type: str) -> None:
    """One multipart upload (metadata and content in one request) with if_generation_match=0,
    its CRC32C given for GCS to check; errors as google.api_core exceptions."""

    base, http = _session()
    crc = base64.b64encode(google_crc32c.Checksum(data).digest()).decode()  # type: ignore[no-untyped-call]
    metadata = json.dumps({"name": object_name, "contentType": content_type, "crc32c": crc}).encode()
    boundary = os.urandom(12).hex()
    while boundary.encode() in data:
        boundary = os.urandom(12).hex()
    sep = f"--{boundary}\r\n".encode()
    body = b"".join(
        (
            sep,
            b"Content-Type: application/json; charset=UTF-8\r\n\r\n",
            metadata,
            b"\r\n",
            sep,
            f"Content-Type: {content_type}\r\n\r\n".encode(),
            data,
            f"\r\n--{boundary}--\r\n".encode(),
        )
    )
    url = f"{base}/upload/storage/v1/b/{quote(bucket_name_, safe='')}/o?uploadType=multipart&ifGenerationMatch=0"
    status, answer = _post(http, url, body, {"Content-Type": f'multipart/related; boundary="{boundary}"'})
    if status >= 400:
        try:
            message = json.loads(answer)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = f"upload of {object_name} answered {status}"
        raise gexc.from_http_status(status, str(message))  # type: ignore[no-untyped-call]


def list_objects(bucket_name_: str, prefix: str) -> list[str]:
    """Names of the objects under a prefix (none when the bucket does not exist)."""

    try:
        return [
            b.name
            for b in context.gcs().list_blobs(
                bucket_name_, prefix=prefix, timeout=CALL_TIMEOUT, retry=_call_retry()
            )
        ]
    except gexc.NotFound:
        return []


def copy_object(source_bucket: str, object_name: str, destination: Bucket) -> Written:
    """Copy an object into another bucket under the same name, unless it is already there."""

    client = context.gcs()
    source = client.bucket(source_bucket).blob(object_name)
    target = destination.blob(object_name)
    # GCS refuses the rewrite with 412 when the target exists; emulators do not, so ask first.
    if target.exists(timeout=CALL_TIMEOUT, retry=_call_retry()):
        return Written(gs_uri(destination.name, object_name), False)
    token: str | None = None
    try:
        while True:
            token, _, _ = target.rewrite(
                source, token=token, if_generation_match=0, timeout=CALL_TIMEOUT, retry=_call_retry()
            )
            if token is None:
                return Written(gs_uri(destination.name, object_name), True)
    except gexc.PreconditionFailed:
        return Written(gs_uri(destination.name, object_name), False)


def delete_object(bucket_name_: str, object_name: str) -> bool:
    """Delete an object; False when it was not there."""

    try:
        context.gcs().bucket(bucket_name_).blob(object_name).delete(timeout=CALL_TIMEOUT, retry=_call_retry())
        return True
    except gexc.NotFound:
        return False


def read_bytes(bucket_name_: str, object_name: str) -> bytes:
    data: bytes = (
        context.gcs()
        .bucket(bucket_name_)
        .blob(object_name)
        .download_as_bytes(timeout=CALL_TIMEOUT, retry=_call_retry())
    )
    return data


def iter_message_objects(bucket_name_: str, prefix: str) -> Iterator[str]:
    """The message JSON and everything beside it (attachments, transcript, updates)."""
    names = set(list_objects(bucket_name_, message_object(prefix)))
    names.update(list_objects(bucket_name_, prefix + "/"))
    for name in sorted(names):
        if name == message_object(prefix) or name.startswith(prefix + "/"):
            yield name


# ------------------------------------------------------------------------------------------
# erasure: no bucket comes back for an erased user, and deleted means deleted
#
# GCS keeps a deleted object for the bucket's soft-delete retention (7 days by default on
# buckets made since 2024) and offers no way to delete a soft-deleted object sooner: it can only
# be listed or restored (restoring makes a new copy; the soft-deleted one stays). So an erasure
# sets a bucket's soft delete to 0 before it deletes anything there, which makes its own deletions
# final, and reports the soft-deleted objects that earlier deletions left, with the time GCS
# deletes them for good.


ERASE_ROUNDS = 30
"""Rounds of "delete every object, then the bucket" before an erasure gives up on a bucket that
keeps filling (its writers are fenced off first, so two or three rounds are the rule)."""
ERASE_PAUSE_SECONDS = 0.2
"""Pause between two rounds, for writes already in flight to land."""


class OwnerErased(PermanentStorageError):
    """The bucket belongs to an erased user: nothing is written to it, and it is not created
    again, until the user consents again."""


class BucketKeepsFilling(StorageError):
    """Objects kept appearing in a bucket being erased; running the erasure again finishes it."""


@dataclass
class SoftDeleted:
    """Soft-deleted copies that GCS still keeps (and will not delete sooner)."""

    objects: int = 0
    until: datetime | None = None
    """When GCS deletes the last of them for good (their latest hard-delete time)."""

    def add(self, other: SoftDeleted) -> None:
        self.objects += other.objects
        if other.until is not None and (self.until is None or other.until > self.until):
            self.until = other.until


@dataclass
class BucketErasure:
    """What erasing one bucket did."""

    bucket_name: str
    existed: bool = False
    objects_deleted: int = 0
    soft_delete_turned_off: bool = False
    """Whether the bucket's soft delete was on (or unknown) and set to 0 before any deletion."""
    soft_deleted: SoftDeleted = field(default_factory=SoftDeleted)
    """Objects soft-deleted before the erasure (and, if the bucket itself was soft-deleted
    before, that bucket), which GCS keeps until `soft_deleted.until`."""
    rounds: int = 0


def _create_unless_erased(client: Client, name: str) -> Bucket:
    """Create (or adopt) a bucket, never for an erased user.

    Checked before, and once more after: an erasure that began while the bucket was being
    created finds it (and empties it) or this finds the erasure (and deletes the bucket).
    """
    if tombstones.bucket_erased(name):
        raise OwnerErased(f"bucket {name} belongs to an erased user")
    bucket = _create_or_adopt(client, name)
    if tombstones.bucket_erased(name):
        erase_bucket(name)
        raise OwnerErased(f"bucket {name} belongs to an erased user")
    return bucket


def write_fence(note_id: int, bucket_name: str) -> str | None:
    """Why an archive job must not write a message's objects now (None: it may).

    `message erased` when the row is gone, `owner erased` when the bucket is an erased user's.
    """
    row = context.db().run_prepared("erase.write_fence", {"note_id": note_id, "bucket_name": bucket_name})
    if row is None:
        return None
    if row["gone"]:
        return "message erased"
    if row["erased"]:
        return "owner erased"
    return None


def discard_message(bucket_name_: str, prefix: str) -> int:
    """Delete a message's objects (its JSON and everything beside it); return how many."""
    return sum(delete_object(bucket_name_, name) for name in iter_message_objects(bucket_name_, prefix))


def _retention(bucket: Bucket) -> int | None:
    value = bucket.soft_delete_policy.retention_duration_seconds
    return int(value) if value is not None else None


def _set_retention(bucket: Bucket, seconds: int) -> None:
    bucket.soft_delete_policy.retention_duration_seconds = seconds
    bucket.patch(timeout=CALL_TIMEOUT, retry=_call_retry())


def _under(name: str, prefixes: set[str]) -> bool:
    """Whether an object is a message's JSON or lies beside it, for one of the message prefixes."""
    if name.removesuffix(".json") in prefixes:
        return True
    parts = name.split("/")
    return any("/".join(parts[:i]) in prefixes for i in range(1, len(parts)))


def _delete_live(client: Client, name: str) -> int:

    deleted = 0
    for blob in client.list_blobs(name, timeout=CALL_TIMEOUT, retry=_call_retry()):
        try:
            blob.delete(timeout=CALL_TIMEOUT, retry=_call_retry())
            deleted += 1
        except gexc.NotFound:
            pass
    return deleted


def _soft_deleted(client: Client, name: str, prefixes: set[str] | None = None) -> SoftDeleted:
    """The soft-deleted objects GCS keeps in a bucket (only those under `prefixes`, if given).

    fake-gcs-server ignores `softDeleted` and lists live objects: an object listed without a
    soft-delete time is a live one, and not counted.
    """
    found = SoftDeleted()
    listing = client.list_blobs(
        name,
        prefix=MESSAGES_PREFIX + "/" if prefixes is not None else None,
        soft_deleted=True,
        timeout=CALL_TIMEOUT,
        retry=_call_retry(),
    )
    for blob in listing:
        if blob.soft_delete_time is None or (prefixes is not None and not _under(blob.name, prefixes)):
            continue
        found.add(SoftDeleted(1, blob.hard_delete_time))
    return found


def _soft_deleted_bucket(client: Client, name: str) -> SoftDeleted:
    """A soft-deleted bucket of that name (deleted earlier, with its soft-deleted objects)."""
    found = SoftDeleted()
    for bucket in client.list_buckets(
        prefix=name, soft_deleted=True, timeout=CALL_TIMEOUT, retry=_call_retry()
    ):
        if bucket.name == name and bucket.soft_delete_time is not None:
            found.add(SoftDeleted(0, bucket.hard_delete_time))
    return found


def erase_bucket(name: str) -> BucketErasure:
    """Delete a bucket: soft delete set to 0 first (so that nothing deleted now is kept), then
    every object, then the bucket, in rounds until it is gone. Writers must be fenced off first
    (the tombstone). What earlier deletions left soft-deleted is reported, not deletable.

    Raises BucketKeepsFilling after ERASE_ROUNDS rounds that each found new objects.
    """

    client = context.gcs()
    result = BucketErasure(name)
    try:
        bucket = client.get_bucket(name, timeout=CALL_TIMEOUT, retry=_call_retry())
    except gexc.NotFound:
        result.soft_deleted = _soft_deleted_bucket(client, name)
        forget_bucket(name)
        return result
    result.existed = True
    if _retention(bucket) != 0:
        _set_retention(bucket, 0)
        result.soft_delete_turned_off = True
    try:
        while True:
            result.rounds += 1
            result.objects_deleted += _delete_live(client, name)
            if result.rounds == 1:
                result.soft_deleted = _soft_deleted(client, name)
            try:
                bucket.delete(timeout=CALL_TIMEOUT, retry=_call_retry())
                break
            except (gexc.Conflict, gexc.PreconditionFailed):
                # Not empty: a write that was in flight landed. GCS answers 409, emulators 412.
                if result.rounds >= ERASE_ROUNDS:
                    raise BucketKeepsFilling(
                        f"bucket {name} kept filling for {result.rounds} rounds"
                    ) from None
                time.sleep(ERASE_PAUSE_SECONDS)
    except gexc.NotFound:
        pass  # deleted meanwhile (another erasure run)
    forget_bucket(name)
    log.info(
        "bucket erased",
        extra={
            "bucket": name,
            "objects": result.objects_deleted,
            "soft_deleted_kept": result.soft_deleted.objects,
            "rounds": result.rounds,
        },
    )
    return result


@dataclass
class ObjectsErasure:
    """What erasing some messages' objects from a shared bucket did."""

    bucket_name: str
    objects_deleted: int = 0
    soft_delete_paused: bool = False
    soft_deleted: SoftDeleted = field(default_factory=SoftDeleted)


def erase_message_objects(
    name: str, prefixes: set[str], live: set[str] | None = None, *, count_soft_deleted: bool = True
) -> ObjectsErasure:
    """Delete some messages' objects from a bucket that stays (an account's fallback bucket): the
    live objects of the messages under `live` (all of `prefixes` when None), with the bucket's
    soft delete set to 0 for the time of the deletion and then back as it was; and count the
    soft-deleted copies of the messages under `prefixes` (left there by earlier deletions, such
    as a move into a user's bucket)."""

    client = context.gcs()
    result = ObjectsErasure(name)
    to_delete = prefixes if live is None else live
    if not to_delete and not (prefixes and count_soft_deleted):
        return result
    try:
        bucket = client.get_bucket(name, timeout=CALL_TIMEOUT, retry=_call_retry())
    except gexc.NotFound:
        return result
    if to_delete:
        retention = _retention(bucket)
        if retention:
            _set_retention(bucket, 0)
            result.soft_delete_paused = True
        try:
            for prefix in sorted(to_delete):
                result.objects_deleted += discard_message(name, prefix)
        finally:
            if retention:
                _set_retention(bucket, retention)
    if count_soft_deleted:
        result.soft_deleted = _soft_deleted(client, name, prefixes | to_delete)
    return result
