"""Get the raw BPS files safely and resumably from the public S3 bucket over HTTPS.

Why this is more than `requests.get` in a loop: a full fetch is 77,177 small files over a
network that drops connections, so every download is retried with backoff, checked against
Content-Length (and the S3 ETag when it is a plain MD5), written to a hidden temporary name
and only renamed into place once complete. A file that is visible is therefore complete, and a
re-run fetches only what is missing. `meta.csv` comes from a remote bucket and is untrusted:
every filename must match the BPS grammar and resolve inside the raw folder before it is used
as a path or a URL.

One file, though over 450 lines, because it is one mechanism: the hidden `.NAME.*.part` name
that `_save_body` writes is what `remove_stale_partials` deletes and `is_complete_file` relies
on, and the retry policy, session pool and thread pool serve nothing else. The Hub mirror, a
snapshot with the label in the folder name, is `hf_mirror.py`.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import random
import re
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence
from urllib.parse import quote

from tqdm.auto import tqdm

from .bps import MetadataError, parse_filename
from .disk import InsufficientSpaceError, check_free_space, format_bytes

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://nasa-bps-training-data.s3.us-west-2.amazonaws.com/Microscopy/train/"
META_FILENAME = "meta.csv"

#: Used when the server will not tell us sizes (no HEAD / no Content-Length). Real crops are ~10-60 KB.
FALLBACK_IMAGE_BYTES = 64 * 1024
#: A remote file larger than this is refused: BPS crops are tens of KB, meta.csv is 3.7 MB.
MAX_IMAGE_BYTES = 64 * 1024 * 1024
MAX_META_BYTES = 256 * 1024 * 1024
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_ETAG_MD5 = re.compile(r'^"?([0-9a-fA-F]{32})"?$')
_CHUNK = 64 * 1024


class FetchError(RuntimeError):
    """A fetch that cannot go on; the message names the URL or folder and the fix."""


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries: `max_attempts` tries per file, exponential backoff with jitter between them."""

    max_attempts: int = 5
    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 30.0
    connect_timeout: float = 10.0
    read_timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1; got {self.max_attempts}")
        if self.backoff_seconds < 0 or self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ValueError("backoff must be >= 0 and timeouts > 0")

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed try number `attempt` (1-based): base * 2^(attempt-1), jittered.

        A server's Retry-After is honoured, but never beyond `max_backoff_seconds`.
        """
        raw = min(self.max_backoff_seconds, self.backoff_seconds * (2 ** (attempt - 1)))
        wait = raw * random.uniform(0.5, 1.0)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_backoff_seconds))
        return wait


@dataclass
class FetchSummary:
    """What a download pass did; `failed` maps filename -> last reason, so nothing fails silently."""

    requested: int = 0
    downloaded: list[str] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    bytes_downloaded: int = 0
    estimated_bytes: int | None = None

    def to_dict(self) -> dict:
        return {
            "requested": self.requested,
            "downloaded": len(self.downloaded),
            "already_present": len(self.already_present),
            "failed": len(self.failed),
            "failed_files": [{"filename": name, "reason": why} for name, why in sorted(self.failed.items())],
            "bytes_downloaded": self.bytes_downloaded,
            "estimated_bytes": self.estimated_bytes,
        }

    def describe(self) -> str:
        text = (
            f"{self.requested} requested: {len(self.downloaded)} downloaded "
            f"({format_bytes(self.bytes_downloaded)}), {len(self.already_present)} already present, "
            f"{len(self.failed)} failed"
        )
        if self.failed:
            shown = sorted(self.failed.items())[:10]
            text += ":\n" + "\n".join(f"  {name}: {why}" for name, why in shown)
            if len(self.failed) > 10:
                text += f"\n  ... and {len(self.failed) - 10} more (see split_report.json)"
            text += "\nRe-run the same command to fetch only the missing files."
        return text


# ----------------------------------------------------------------------------- paths and space


def safe_destination(folder: str | Path, filename: str) -> Path:
    """`folder/filename` for a validated BPS filename that provably stays inside `folder`.

    The grammar check rejects `../x.tif`, absolute paths and subfolders; the resolve check also
    catches a symlink planted under a valid name that points elsewhere.
    """
    parse_filename(filename)  # raises MetadataError naming the bad name (fullmatch: a trailing newline fails too)
    root = Path(folder).resolve()
    target = (root / filename).resolve()
    if target.parent != root:
        raise MetadataError(
            f"{filename!r} resolves to {target}, outside {root} (a symlink?). Remove it from {root}."
        )
    return root / filename


def is_complete_file(path: Path) -> bool:
    """A visible, non-empty regular file. Our writes are atomic, so a visible file is a complete file."""
    try:
        return path.is_file() and path.stat().st_size > 0
    except OSError:
        return False


def remove_stale_partials(folder: Path) -> int:
    """Delete temporary `.NAME.*.part` files left by a killed run; they are never valid data."""
    removed = 0
    if not folder.is_dir():
        return 0
    for entry in os.scandir(folder):
        if entry.name.startswith(".") and entry.name.endswith(".part") and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
                removed += 1
            except OSError:
                pass
    if removed:
        logger.info("Removed %d partial download(s) left by an interrupted run in %s", removed, folder)
    return removed


def url_for(base_url: str, filename: str) -> str:
    return base_url.rstrip("/") + "/" + quote(filename)


# ----------------------------------------------------------------------------- HTTP


class _SessionPool:
    """One `requests.Session` per worker thread (a Session is not guaranteed thread-safe)."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._all: list = []
        self._lock = threading.Lock()

    def get(self):
        session = getattr(self._local, "session", None)
        if session is None:
            import requests  # deferred: only the s3 source downloads; prepare's other sources never load requests
            from requests.adapters import HTTPAdapter  # deferred: as above

            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=1, pool_maxsize=2, max_retries=0)  # we retry ourselves
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            # identity: Content-Length must describe the bytes we write, and TIFFs are stored as sent.
            session.headers.update({"Accept-Encoding": "identity", "User-Agent": "bps-vit/0.1"})
            self._local.session = session
            with self._lock:
                self._all.append(session)
        return session

    def close(self) -> None:
        with self._lock:
            for session in self._all:
                session.close()
            self._all.clear()


class _Retryable(Exception):
    """This try failed in a way another try may not (5xx, dropped connection, short body); `retry_after` in s."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class _GiveUp(Exception):
    """This file failed in a way retrying cannot fix (404, over the size limit, bad URL, unwritable folder)."""


def _retry_after(headers) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _download_to(session, url: str, dest: Path, policy: RetryPolicy, max_bytes: int) -> tuple[int | None, str]:
    """Download `url` to `dest` atomically. Returns (bytes, "") on success or (None, reason) on failure."""
    reason = "not attempted"
    for attempt in range(1, policy.max_attempts + 1):
        try:
            return _try_once(session, url, dest, policy, max_bytes), ""
        except _GiveUp as err:
            return None, str(err)
        except _Retryable as err:
            reason, retry_after = str(err), err.retry_after
        if attempt < policy.max_attempts:
            wait = policy.delay(attempt, retry_after)
            logger.debug("%s: %s; retry %d/%d in %.2fs", url, reason, attempt, policy.max_attempts - 1, wait)
            time.sleep(wait)
    return None, f"gave up after {policy.max_attempts} attempts; last error: {reason}"


def _try_once(session, url: str, dest: Path, policy: RetryPolicy, max_bytes: int) -> int:
    """One GET into `dest`; returns the bytes written. Every failure becomes `_Retryable` or `_GiveUp`.

    A full disk is neither: it raises `InsufficientSpaceError`, because every other file would fail too.
    """
    import requests  # deferred: only the s3 source downloads; prepare's other sources never load requests

    transient = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                 requests.exceptions.ContentDecodingError)
    try:
        with session.get(url, stream=True, timeout=(policy.connect_timeout, policy.read_timeout)) as resp:
            expected = _check_response(resp, max_bytes)
            return _save_body(resp, dest, expected, max_bytes)
    except transient as err:
        text = str(err)
        if "IncompleteRead" in text:  # urllib3 noticed the body ended before Content-Length
            raise _Retryable(f"truncated body (connection closed early): {text[:160]}") from err
        raise _Retryable(f"{type(err).__name__}: {text[:200]}") from err
    except requests.RequestException as err:  # invalid URL etc.: retrying cannot help
        raise _GiveUp(f"{type(err).__name__}: {str(err)[:200]} (not retried)") from err
    except OSError as err:  # local disk trouble: a full disk stops everything, other errors fail this file
        if err.errno == errno.ENOSPC:
            raise InsufficientSpaceError(
                f"The disk holding {dest.parent} is full ({err}). Free space or choose another --raw_dir; "
                "re-running fetches only the missing files."
            ) from err
        raise _GiveUp(f"could not write {dest.name} in {dest.parent}: {err} (not retried)") from err


def _check_response(resp, max_bytes: int) -> int | None:
    """The announced Content-Length (None when absent), once the status and size say the body is worth reading."""
    if resp.status_code in RETRY_STATUS:
        raise _Retryable(f"HTTP {resp.status_code}", _retry_after(resp.headers))
    if resp.status_code != 200:
        raise _GiveUp(f"HTTP {resp.status_code} {resp.reason or ''}".strip() + " (not retried)")
    length_header = resp.headers.get("Content-Length")
    expected = int(length_header) if length_header and length_header.isdigit() else None
    if expected is not None and expected > max_bytes:
        raise _GiveUp(f"server announces {expected} bytes, more than the {max_bytes}-byte limit")
    return expected


def _etag_md5(headers) -> str | None:
    """The MD5 S3 puts in the ETag for plain uploads (not multipart "-N", not SSE-KMS); None when there is none."""
    match = _ETAG_MD5.match(headers.get("ETag", "") or "")
    if match is None or headers.get("x-amz-server-side-encryption", "") == "aws:kms":
        return None
    return match.group(1)


def _save_body(resp, dest: Path, expected: int | None, max_bytes: int) -> int:
    """Stream the body to a hidden temporary file and rename it to `dest` only once length and MD5 check out."""
    etag = _etag_md5(resp.headers)
    digest = hashlib.md5(usedforsecurity=False) if etag else None
    fd, tmp_path = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        written = 0
        with os.fdopen(fd, "wb") as handle:
            for chunk in resp.iter_content(_CHUNK):
                written += len(chunk)
                if written > max_bytes:
                    raise _GiveUp(f"body exceeds the {max_bytes}-byte limit")
                handle.write(chunk)
                if digest is not None:
                    digest.update(chunk)
        if expected is not None and written != expected:
            raise _Retryable(f"truncated body: {written} of {expected} bytes")
        if written == 0:
            raise _Retryable("empty body")
        if digest is not None and digest.hexdigest().lower() != etag.lower():
            raise _Retryable(f"checksum mismatch: MD5 {digest.hexdigest()} != ETag {etag}")
        os.replace(tmp_path, dest)
        tmp_path = None
        return written
    finally:
        if tmp_path is not None:
            try:
                os.unlink(tmp_path)
            except OSError:
                pass


def fetch_meta_csv(base_url: str, raw_dir: str | Path, *, policy: RetryPolicy = RetryPolicy()) -> Path:
    """Download `<base_url>/meta.csv` to `<raw_dir>/meta.csv` (atomically); reuse a local copy if offline."""
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    dest = raw_dir / META_FILENAME
    pool = _SessionPool()
    try:
        size, reason = _download_to(pool.get(), url_for(base_url, META_FILENAME), dest, policy, MAX_META_BYTES)
    finally:
        pool.close()
    if size is None:
        if is_complete_file(dest):
            logger.warning("Could not refresh %s (%s); using the copy already in %s", META_FILENAME, reason, raw_dir)
            return dest
        raise FetchError(
            f"Could not download {url_for(base_url, META_FILENAME)}: {reason}. Check the network and --base_url, "
            f"or put a meta.csv into {raw_dir} and use --source local --raw_dir {raw_dir}."
        )
    logger.info("Fetched %s (%s)", url_for(base_url, META_FILENAME), format_bytes(size))
    return dest


def estimate_download_bytes(
    base_url: str, filenames: Sequence[str], *, sample: int = 8, policy: RetryPolicy = RetryPolicy()
) -> int:
    """Estimate the bytes `filenames` will take: HEAD a few of them, scale the mean size up.

    A server that gives no sizes falls back to `FALLBACK_IMAGE_BYTES` per file, so the check
    errs on the side of asking for space rather than filling the disk.
    """
    if not filenames:
        return 0
    picks = list(filenames) if len(filenames) <= sample else random.Random(0).sample(list(filenames), sample)
    sessions = _SessionPool()

    def head_size(name: str) -> int | None:
        try:
            resp = sessions.get().head(
                url_for(base_url, name), timeout=(policy.connect_timeout, policy.read_timeout), allow_redirects=True
            )
            length = resp.headers.get("Content-Length", "")
            if resp.status_code == 200 and length.isdigit() and int(length) > 0:
                return int(length)
        except Exception as err:  # an estimate must never stop the fetch itself
            logger.debug("HEAD %s failed: %s", name, err)
        return None

    try:  # concurrently: one round trip of latency before the download starts, not `sample` of them
        with ThreadPoolExecutor(max_workers=len(picks), thread_name_prefix="bps-head") as executor:
            sizes = [size for size in executor.map(head_size, picks) if size is not None]
    finally:
        sessions.close()
    mean = sum(sizes) / len(sizes) if sizes else FALLBACK_IMAGE_BYTES
    return int(mean * len(filenames))


def download_files(
    base_url: str,
    filenames: Iterable[str],
    raw_dir: str | Path,
    *,
    num_workers: int = 16,
    policy: RetryPolicy = RetryPolicy(),
    disable_tqdm: bool = False,
    check_space: bool = True,
    space_margin: float = 0.10,
) -> FetchSummary:
    """Download the BPS images `filenames` from `base_url` into the flat `raw_dir`, concurrently.

    Files already complete are not fetched again. Each filename is validated first; an invalid
    one raises `MetadataError` before any request is made (callers pass validated rows, so an
    invalid name here is a bug or tampering, not something to skip). Failures after all retries
    are collected in the returned summary rather than raised, so one bad file does not cost the
    other 77,000.
    """
    if num_workers < 1:
        raise ValueError(f"--num_workers must be >= 1; got {num_workers}")
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(raw_dir)
    names = list(dict.fromkeys(filenames))  # de-duplicate, keep order
    targets = {name: safe_destination(raw_dir, name) for name in names}
    summary = FetchSummary(requested=len(names))
    missing = []
    for name in names:
        (summary.already_present if is_complete_file(targets[name]) else missing).append(name)
    if not missing:
        logger.info("All %d selected images are already in %s; nothing to download.", len(names), raw_dir)
        return summary
    if check_space:
        summary.estimated_bytes = estimate_download_bytes(base_url, missing, policy=policy)
        check_free_space(raw_dir, int(summary.estimated_bytes * (1 + space_margin)),
                         what=f"downloading {len(missing)} images")
    _download_concurrently(base_url, {name: targets[name] for name in missing}, summary, policy=policy,
                           num_workers=num_workers, disable_tqdm=disable_tqdm)
    summary.downloaded.sort()
    (logger.warning if summary.failed else logger.info)("Download: %s", summary.describe())
    return summary


def _download_concurrently(base_url: str, targets: dict[str, Path], summary: FetchSummary, *, policy: RetryPolicy,
                           num_workers: int, disable_tqdm: bool) -> None:
    """Fetch every `targets` name on a thread pool, recording each outcome in `summary` as it completes.

    Ctrl-C cancels the queued downloads at once; the ones in flight leave only hidden partial files.
    """
    pool = _SessionPool()

    def work(name: str) -> tuple[str, int | None, str]:
        size, reason = _download_to(pool.get(), url_for(base_url, name), targets[name], policy, MAX_IMAGE_BYTES)
        return name, size, reason

    executor = ThreadPoolExecutor(max_workers=min(num_workers, len(targets)), thread_name_prefix="bps-fetch")
    try:
        with tqdm(total=len(targets), unit="img", desc="Downloading BPS images", disable=disable_tqdm) as bar:
            futures = [executor.submit(work, name) for name in targets]
            for future in as_completed(futures):
                name, size, reason = future.result()  # summary is only touched here, on the caller's thread
                if size is None:
                    summary.failed[name] = reason
                    bar.set_postfix(failed=len(summary.failed), refresh=False)
                else:
                    summary.downloaded.append(name)
                    summary.bytes_downloaded += size
                bar.update(1)
    except BaseException:
        executor.shutdown(wait=False, cancel_futures=True)  # Ctrl-C: stop queued work; partials stay hidden
        pool.close()
        raise
    executor.shutdown(wait=True)
    pool.close()
