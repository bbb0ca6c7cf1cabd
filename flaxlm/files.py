"""Files written whole or not at all: a temporary file beside the target, synced, then renamed over it.

A reader (or a rerun after a crash, even kill -9) sees the old file or the new one, never a
truncated one; a failed write leaves no temporary file behind. `exclusive` serialises processes
that would build the same thing (two runs preparing one dataset at once).
"""

import contextlib
import errno
import fcntl
import os
import uuid
from collections.abc import Callable, Iterator

from flaxlm.errors import FlaxlmError

_FULL = (errno.ENOSPC, errno.EDQUOT)  # no space left on the device; the user's disk quota used up


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yields a temporary path in `path`'s folder (created if needed) for the block to write; when the
    block completes, the file is synced and renamed to `path`. For writers that want a file name
    (safetensors, a JSON-lines writer); `write_atomic` covers bytes and text."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex[:12]}")
    # Created here, so it gets the mode of any new file (the umask applies); restored below for
    # writers that replace it with their own (safetensors makes its files owner-only).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    mode = os.fstat(fd).st_mode & 0o777
    os.close(fd)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_atomic(path: str | os.PathLike, data: bytes | str) -> None:
    """Writes `data` (str: as UTF-8) to `path` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)


@contextlib.contextmanager
def exclusive(lock_path: str | os.PathLike) -> Iterator[None]:
    """Holds an exclusive flock on `lock_path` (created if needed) for the block: a second process (or
    thread) entering the block with the same path waits until the first leaves it. The kernel drops the
    lock when its holder exits, even by kill -9, so a crashed holder never blocks the next run."""
    lock_path = os.fspath(lock_path)
    os.makedirs(os.path.dirname(os.path.abspath(lock_path)), exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def disk_full(e: BaseException) -> str | None:
    """The OS's words for a full disk or quota ("No space left on device") if `e`, or an exception it
    was raised from, is one: an OSError with ENOSPC/EDQUOT, or a library's error quoting those words
    (array_record raises RuntimeError("write() failed: No space left on device; ...")). Else None."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _FULL:
            return os.strerror(e.errno)
        words = next((os.strerror(code) for code in _FULL if os.strerror(code) in str(e)), None)
        if words:
            return words
        e = e.__cause__ or e.__context__
    return None


@contextlib.contextmanager
def full_disk_raises(error: Callable[[str], FlaxlmError]) -> Iterator[None]:
    """Re-raises a full disk or quota (`disk_full`) in the block as ``error(the OS's words)``: a one-line
    FlaxlmError naming the folder and the fix, for the CLI to print. Other exceptions pass unchanged."""
    try:
        yield
    except FlaxlmError:
        raise
    except Exception as e:
        words = disk_full(e)
        if words is None:
            raise
        raise error(words) from e
