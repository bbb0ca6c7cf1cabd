"""flaxlm.files: a file is replaced whole or left as it was."""

import errno
import os

import pytest

from flaxlm import files


def test_write_atomic_replaces_the_file_and_leaves_nothing_else(tmp_path):
    path = tmp_path / "sub" / "a.json"  # the folder is created
    files.write_atomic(path, "first\n")
    files.write_atomic(path, b"second\n")
    assert path.read_text() == "second\n" and os.listdir(path.parent) == ["a.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary_one(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("old")
    with pytest.raises(RuntimeError), files.atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("disk gone")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["a.json"]


def test_a_writer_that_makes_its_file_owner_only_gets_the_usual_mode(tmp_path):
    umask = os.umask(0o022)
    try:
        with files.atomic_path(tmp_path / "w.bin") as tmp:
            os.remove(tmp)  # as safetensors does: its own file, mode 0600
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
            os.close(fd)
    finally:
        os.umask(umask)
    assert (tmp_path / "w.bin").stat().st_mode & 0o777 == 0o644


def test_a_full_disk_is_recognised_behind_wrappers_and_becomes_the_given_error():
    """ENOSPC / EDQUOT as an OSError, one raised from it, or a library's error quoting the OS's words
    (array_record's RuntimeError): the given one-line error; any other error passes unchanged."""
    from flaxlm.errors import DataError

    enospc = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "tokens.int32")
    try:
        try:
            raise enospc
        except OSError as e:
            raise ValueError("writing a shard failed") from e
    except ValueError as e:
        wrapped = e
    array_record = RuntimeError("write() failed: No space left on device; writing x.array_record; at byte 0")
    quota = OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
    for e in (enospc, wrapped, array_record, quota):
        assert files.disk_full(e) in (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT)), e
        with pytest.raises(DataError, match=r"^full: (No space left on device|Disk quota exceeded)$"):
            with files.full_disk_raises(lambda words: DataError(f"full: {words}")):
                raise e
    for e in (OSError(errno.EACCES, "Permission denied"), RuntimeError("disk gone"), DataError("mine")):
        assert files.disk_full(e) is None
        with pytest.raises(type(e)), files.full_disk_raises(lambda words: DataError(words)):
            raise e
