"""Downloading weight files: plain URLs and Hugging Face hub files, into a cache.

* **Cache.** ``$TESSERA_HOME`` (default ``~/.cache/tessera``) holds ``downloads/`` (the files
  as published, under ``downloads/<host>/<path of the URL>``) and ``weights/`` (each
  converted once to tessera's safetensors, see :mod:`tessera.weights.zoo`). A file put at its
  ``downloads/`` path by hand is used as if it had been downloaded.
* **Plain URLs** are streamed with ``urllib`` to ``<file>.part`` and renamed into place once
  complete and checked, so the cache never holds half a file under the real name. A cut
  connection is resumed where it stopped (an HTTP ``Range`` request), here and by the next
  run after a crash; a server that ignores ranges sends the file again from the start.
* **Hashes.** Where the source publishes the file's SHA-256 (or, as torchvision's file names,
  its first hex digits), the download is checked against it; a mismatch deletes the file and
  says so.
* **Mirror.** ``TESSERA_WEIGHTS_MIRROR=http://host:port`` fetches every plain URL
  ``https://H/P`` from ``http://host:port/H/P`` instead (a firewall's mirror, or a test
  server).
* **Hub files** go through ``huggingface_hub``, which honours ``HF_ENDPOINT``, ``HF_HOME`` /
  ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE`` (read when the file is asked for).
* **One download at a time.** A lock file beside the target makes other processes (DDP
  ranks, a second command) wait for the first one's download instead of repeating it.
* **Offline** (``TESSERA_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``) or unreachable: a
  :class:`DownloadError` of one line naming the URL and where to put the file by hand.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..atomic import publish
from ..errors import CheckpointError

log = logging.getLogger(__name__)

CHUNK = 1 << 20
#: attempts to finish a download whose connection is cut (each resumes where the last stopped)
ATTEMPTS = 4
TIMEOUT_S = 30.0
_TRUE = {"1", "true", "yes", "on"}


class DownloadError(CheckpointError):
    """A weight file that cannot be downloaded (``unreachable``: the network or the server
    said no; ``where`` is the URL, ``reason`` why, ``manual`` where to put the file by hand),
    or that arrived damaged."""

    def __init__(self, message: str, where: str | None = None, reason: str | None = None,
                 manual: Path | None = None) -> None:
        super().__init__(message)
        self.where, self.reason, self.manual = where, reason, manual

    @property
    def unreachable(self) -> bool:
        return self.where is not None


def _cannot(where: str, reason: str, manual: Path) -> DownloadError:
    return DownloadError(f"cannot download {where}: {reason}; download it yourself and put it at {manual}",
                         where, reason, manual)


def tessera_home() -> Path:
    """``$TESSERA_HOME``, else ``~/.cache/tessera``."""
    return Path(os.environ.get("TESSERA_HOME") or Path.home() / ".cache" / "tessera").expanduser()


def is_offline() -> bool:
    """``TESSERA_OFFLINE`` or ``HF_HUB_OFFLINE`` is set to a true value."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("TESSERA_OFFLINE", "HF_HUB_OFFLINE"))


def mirrored(url: str) -> str:
    """``url`` as fetched: ``https://H/P`` becomes ``$TESSERA_WEIGHTS_MIRROR/H/P`` when the
    mirror is set."""
    mirror = os.environ.get("TESSERA_WEIGHTS_MIRROR", "").strip().rstrip("/")
    if not mirror:
        return url
    parts = urllib.parse.urlsplit(url)
    return f"{mirror}/{parts.netloc}{parts.path}"


def download_path(url: str) -> Path:
    """Where the file of ``url`` is kept: ``$TESSERA_HOME/downloads/<host>/<path>``."""
    parts = urllib.parse.urlsplit(url)
    segments = [s for s in parts.path.split("/") if s not in ("", ".", "..")]
    return tessera_home() / "downloads" / parts.netloc / Path(*segments)


def hub_download_path(repo_id: str, filename: str) -> Path:
    """Where a hub file may be put by hand: ``$TESSERA_HOME/downloads/huggingface.co/<repo>/<file>``."""
    return tessera_home() / "downloads" / "huggingface.co" / repo_id / filename


@contextmanager
def file_lock(target: Path) -> Iterator[None]:
    """Hold ``<target>.lock`` (a lock between processes); say so when another process holds it."""
    from filelock import FileLock, Timeout

    target.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(target.with_name(target.name + ".lock")))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("waiting for another process to finish %s", target.name)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def check_hash(path: Path, expected: str | None, url: str) -> None:
    """Compare the file's SHA-256 with ``expected`` (the whole digest or its first hex digits);
    on a mismatch delete the file and raise :class:`DownloadError`."""
    if not expected:
        return
    actual = sha256_of(path)
    if not actual.startswith(expected.lower()):
        path.unlink(missing_ok=True)
        raise DownloadError(f"{url}: the file's SHA-256 starts with {actual[:len(expected)]}, expected {expected}; "
                            f"the file was damaged or changed on the way and has been deleted (run again to "
                            f"download it anew)")


def _reason(error: BaseException) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return str(getattr(error.reason, "strerror", None) or error.reason)
    return str(error) or type(error).__name__


def _progress(total: int | None, initial: int, name: str):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                leave=False, disable=None)


def _stream(url: str, part: Path, name: str) -> None:
    """Append the rest of ``url`` to ``part`` (from its current size). Raises the network's
    error, or ``http.client.IncompleteRead`` when the connection ends before the file does."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "tessera", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the range starts at the end: what we have is the whole file
            return
        raise
    with response:
        if have and response.status != 206:  # the server ignored the range: start again
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        written = have
        with open(part, "ab" if have else "wb") as f, _progress(total, have, name) as bar:
            while block := response.read(CHUNK):
                f.write(block)
                written += len(block)
                bar.update(len(block))
            f.flush()
            os.fsync(f.fileno())
        if total is not None and written < total:
            raise http.client.IncompleteRead(b"", total - written)


def download_url(url: str, sha256: str | None = None, dest: Path | None = None) -> Path:
    """The file of ``url`` in the cache (:func:`download_path`), downloaded if it is not
    there yet, resumed if a download was cut, checked against ``sha256`` (a digest or its
    first hex digits) when given: a fresh download, and a file found there (put by hand).

    Raises :class:`DownloadError` (one line: the URL, why, and where to put the file by hand).
    """
    dest = dest or download_path(url)
    if dest.is_file():
        check_hash(dest, sha256, url)
        return dest
    if is_offline():
        raise _cannot(url, "offline mode is set (TESSERA_OFFLINE / HF_HUB_OFFLINE)", dest)
    with file_lock(dest):
        if dest.is_file():  # another process finished (and checked) it while we waited
            return dest
        fetched = mirrored(url)
        via = f" (through the mirror {fetched})" if fetched != url else ""
        part = dest.with_name(dest.name + ".part")
        if part.exists():
            log.info("resuming the download of %s from %d bytes", url, part.stat().st_size)
        for attempt in range(1, ATTEMPTS + 1):
            try:
                _stream(fetched, part, dest.name)
                break
            except (http.client.IncompleteRead, ConnectionError, socket.timeout, TimeoutError) as e:
                if attempt == ATTEMPTS:
                    raise _cannot(f"{url}{via}", f"the connection was cut {attempt} times ({_reason(e)}); run "
                                  f"again to resume", dest) from None
                log.info("the download of %s was cut at %d bytes; resuming", url,
                         part.stat().st_size if part.exists() else 0)
            except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as e:
                raise _cannot(f"{url}{via}", _reason(e), dest) from None
        check_hash(part, sha256, url)
        publish(part, dest)
    return dest


def hub_cache_dir() -> str:
    """huggingface_hub's cache, from the environment as it is now (``HF_HUB_CACHE``, else
    ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return os.path.join(os.path.expanduser(home), "hub")


#: hub repositories made before safetensors have their weights as pytorch_model.bin only
HUB_FALLBACKS = {"model.safetensors": "pytorch_model.bin"}


def _unreachable(endpoint: str) -> str | None:
    """Why ``endpoint`` cannot be reached at all (no name, no route, refused), or None; quick,
    so that a machine without network fails at once instead of after the hub client's
    retries. Skipped behind a proxy, which a direct connection would not use."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")):
        return None
    parts = urllib.parse.urlsplit(endpoint)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=5).close()
    except OSError as e:
        return e.strerror or str(e) or type(e).__name__
    return None


def download_hub(repo_id: str, filename: str, revision: str | None = None) -> Path:
    """A file of a Hugging Face hub repository, through ``huggingface_hub`` (its cache, its
    endpoint, its offline mode); a file put at :func:`hub_download_path` by hand comes first.
    A repository without ``model.safetensors`` gives its ``pytorch_model.bin``.

    Raises :class:`DownloadError` naming the repository and file, and where to put it by hand.
    """
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import RemoteEntryNotFoundError

    names = [filename] + ([HUB_FALLBACKS[filename]] if filename in HUB_FALLBACKS else [])
    for name in names:
        if hub_download_path(repo_id, name).is_file():
            return hub_download_path(repo_id, name)
    endpoint = os.environ.get("HF_ENDPOINT", "").rstrip("/") or None
    base = endpoint or "https://huggingface.co"
    kwargs = {"revision": revision, "endpoint": endpoint, "cache_dir": hub_cache_dir()}
    for name in names:  # already in huggingface_hub's cache (a look at the files: no network)
        cached = try_to_load_from_cache(repo_id, name, cache_dir=kwargs["cache_dir"], revision=revision)
        if isinstance(cached, str):
            return Path(cached)
    where = f"{base}/{repo_id}/resolve/{revision or 'main'}/{filename}"
    manual = hub_download_path(repo_id, filename)
    if is_offline():
        raise _cannot(where, "offline mode is set (TESSERA_OFFLINE / HF_HUB_OFFLINE) and the file is not in the "
                      "hub cache", manual)
    reason = _unreachable(base)
    if reason is None:
        for name in names:
            try:
                return Path(hf_hub_download(repo_id, name, **kwargs))
            except RemoteEntryNotFoundError as e:
                reason = " ".join(str(e).split()) or type(e).__name__
            except Exception as e:  # huggingface_hub's errors come from its HTTP client and its own hierarchy
                reason = " ".join(str(e).split()) or type(e).__name__
                break
    raise _cannot(where, reason[:300], manual)
