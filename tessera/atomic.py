"""Files written so that a crash never leaves a half-written one: every writer goes to a
temporary file beside the target, which is flushed to disk and renamed over the target
(``os.replace`` is atomic), so the old file stays complete until the new one is."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; once the block has written it, flush it to
    disk and rename it to ``path``. On an error the temporary file is removed and ``path``
    is left as it was."""
    path = Path(path)
    # a fresh name beside the target: same file system, so the rename is atomic; unique, so
    # that two writers of one file never share a temporary
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        publish(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Flush the complete file ``tmp`` to disk and rename it to ``path`` (same directory), so
    that ``path`` is either its old self or the whole new file (downloads use this for their
    resumable ``.part`` files)."""
    tmp, path = Path(tmp), Path(path)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
        os.fchmod(f.fileno(), 0o666 & ~_UMASK)  # some writers create their files private
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def remove_stale_temporaries(directory: str | os.PathLike, names: Iterable[str]) -> None:
    """Remove what a killed writer left of ``atomic_path``'s temporary files for ``names``
    in ``directory`` (the files themselves are whole: the old ones or the new ones)."""
    for name in names:
        for tmp in Path(directory).glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
