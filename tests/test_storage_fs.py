"""The FileSystem seam: the real and the simulated file system behave alike; the
simulated one loses exactly the unsynced state on a crash and injects faults on request."""

from __future__ import annotations

import errno
import os
import random

import pytest

from minilog.storage import OS_FS, SimulatedFileSystem


@pytest.fixture(params=["os", "sim"])
def fs_root(request, tmp_path):
    """(fs, root directory) for the real disk (a temp dir) and the simulated one."""
    if request.param == "os":
        return OS_FS, str(tmp_path)
    fs = SimulatedFileSystem(random.Random(1))
    fs.makedirs("/data/p-0")
    return fs, "/data/p-0"


def test_write_read_truncate_conform(fs_root):
    fs, root = fs_root
    path = os.path.join(root, "a.log")
    fd = fs.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        assert fs.pwrite(fd, b"hello", 0) == 5
        assert fs.pwritev(fd, [b" ", memoryview(b"world"), bytearray(b"!")], 5) == 7
        assert fs.pread(fd, 100, 0) == b"hello world!"
        assert fs.pread(fd, 5, 6) == b"world"
        assert fs.pread(fd, 5, 100) == b""
        assert fs.fsize(fd) == 12
        fs.ftruncate(fd, 5)
        assert fs.fsize(fd) == 5 and fs.pread(fd, 100, 0) == b"hello"
        assert fs.pwrite(fd, b"!", 7) == 1                   # a gap reads as zeros
        assert fs.pread(fd, 100, 0) == b"hello\0\0!"
        fs.fsync(fd)
    finally:
        fs.close(fd)
    fd = fs.open(path, os.O_RDWR | os.O_TRUNC)
    assert fs.fsize(fd) == 0
    fs.close(fd)


def test_names_conform(fs_root):
    fs, root = fs_root
    a, b = os.path.join(root, "a"), os.path.join(root, "b")
    for path, data in ((a, b"A"), (b, b"B")):
        fd = fs.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        fs.pwrite(fd, data, 0)
        fs.close(fd)
    assert sorted(fs.list_dir(root)) == [("a", 1), ("b", 1)]
    fs.replace(a, b)                                      # atomic rename over an existing file
    assert not fs.exists(a) and fs.exists(b)
    fd = fs.open(b, os.O_RDONLY)
    assert fs.pread(fd, 10, 0) == b"A"
    fs.close(fd)
    fs.fsync_dir(root)
    fs.unlink(b)
    assert fs.list_dir(root) == []
    fs.makedirs(os.path.join(root, "x", "y"))
    fs.makedirs(os.path.join(root, "x", "y"))                  # exists: no error
    assert fs.exists(os.path.join(root, "x", "y"))


def test_errors_conform(fs_root):
    fs, root = fs_root
    missing = os.path.join(root, "missing")
    with pytest.raises(FileNotFoundError):
        fs.open(missing, os.O_RDONLY)
    with pytest.raises(FileNotFoundError):
        fs.unlink(missing)
    with pytest.raises(FileNotFoundError):
        fs.replace(missing, os.path.join(root, "other"))
    with pytest.raises(FileNotFoundError):
        fs.open(os.path.join(root, "no-dir", "f"), os.O_WRONLY | os.O_CREAT)
    with pytest.raises(FileNotFoundError):
        fs.list_dir(missing)
    fd = fs.open(os.path.join(root, "w"), os.O_WRONLY | os.O_CREAT)
    with pytest.raises(OSError) as e:
        fs.pread(fd, 1, 0)                                  # write-only descriptor
    assert e.value.errno == errno.EBADF
    fs.close(fd)
    with pytest.raises(OSError) as e:
        fs.close(fd)
    assert e.value.errno == errno.EBADF


def test_unlinked_file_stays_readable_through_an_open_descriptor(fs_root):
    fs, root = fs_root
    path = os.path.join(root, "f")
    fd = fs.open(path, os.O_RDWR | os.O_CREAT)
    fs.pwrite(fd, b"data", 0)
    fs.unlink(path)
    assert fs.pread(fd, 4, 0) == b"data" and not fs.exists(path)
    fs.close(fd)


# -- the simulated file system's own promises -----------------------------------------


def _write(fs, path, data, *, fsync=False):
    fd = fs.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        n = fs.pwrite(fd, data, 0)
        if fsync:
            fs.fsync(fd)
        return n
    finally:
        fs.close(fd)


def test_crash_keeps_only_fsynced_bytes_and_names():
    fs = SimulatedFileSystem(random.Random(2))
    fs.makedirs("/d")
    _write(fs, "/d/synced", b"durable", fsync=True)
    _write(fs, "/d/unsynced-name", b"x", fsync=True)     # contents fsynced, name not yet
    fs.fsync_dir("/d")
    fd = fs.open("/d/synced", os.O_WRONLY)
    fs.pwrite(fd, b"+lost", 7)                            # appended, never fsynced
    _write(fs, "/d/new", b"new", fsync=True)              # created after the dir fsync
    fs.replace("/d/unsynced-name", "/d/renamed")           # rename not made durable
    fs.crash()
    assert sorted(fs.list_dir("/d")) == [("synced", 7), ("unsynced-name", 1)]
    assert fs.read_bytes("/d/synced") == b"durable"
    with pytest.raises(OSError):
        fs.pwrite(fd, b"!", 0)                             # descriptors died with the machine


def test_torn_crash_keeps_a_prefix_of_unsynced_appends_deterministically():
    kept = []
    for _ in range(2):
        fs = SimulatedFileSystem(random.Random(7))
        fs.makedirs("/d")
        _write(fs, "/d/f", b"base", fsync=True)
        fs.fsync_dir("/d")
        fd = fs.open("/d/f", os.O_WRONLY)
        fs.pwrite(fd, b"0123456789" * 10, 4)
        fs.crash(torn=True)
        data = fs.read_bytes("/d/f")
        assert data.startswith(b"base") and (b"base" + b"0123456789" * 10).startswith(data)
        kept.append(data)
    assert kept[0] == kept[1]                              # same seed, same crash


def test_full_disk_gives_a_short_write_then_enospc_and_recovers_when_space_returns():
    fs = SimulatedFileSystem(capacity_bytes=10)
    fs.makedirs("/d")
    fd = fs.open("/d/f", os.O_RDWR | os.O_CREAT)
    assert fs.pwritev(fd, [b"12345678", b"9abc"], 0) == 10   # what fits
    with pytest.raises(OSError) as e:
        fs.pwrite(fd, b"d", 10)
    assert e.value.errno == errno.ENOSPC and "/d/f" in str(e.value)
    assert fs.pwrite(fd, b"XY", 0) == 2                      # overwriting needs no space
    fs.ftruncate(fd, 4)                                      # frees 6 bytes
    assert fs.used_bytes == 4 and fs.pwrite(fd, b"abcdef", 4) == 6
    fs.capacity_bytes = None
    assert fs.pwrite(fd, b"more", 10) == 4
    fs.close(fd)
    fs.unlink("/d/f")
    assert fs.used_bytes == 0


def test_fault_rules_fire_once_on_matching_paths():
    fs = SimulatedFileSystem()
    fs.makedirs("/d")
    fs.fail("fsync", errno.EIO, path_contains=".log")
    fs.fail("pwrite", errno.EIO, torn_bytes=3, skip=1)
    fs.fail("pwritev", errno.EIO, short_bytes=2)
    fd = fs.open("/d/a.index", os.O_RDWR | os.O_CREAT)
    fs.fsync(fd)                                             # not a .log: no fault
    assert fs.pwrite(fd, b"first", 0) == 5                   # skipped once
    with pytest.raises(OSError) as e:
        fs.pwrite(fd, b"torn!", 5)
    assert e.value.errno == errno.EIO
    assert fs.pread(fd, 100, 0) == b"firsttor"               # 3 bytes landed before the error
    assert fs.pwritev(fd, [b"abc"], 0) == 2                  # a short write, no error
    fs.close(fd)
    fd = fs.open("/d/a.log", os.O_RDWR | os.O_CREAT)
    with pytest.raises(OSError):
        fs.fsync(fd)
    fs.fsync(fd)                                              # count was 1
    fs.close(fd)
    assert fs.faults_injected == 3


def test_random_faults_are_seeded():
    def run(seed):
        fs = SimulatedFileSystem(random.Random(seed))
        fs.makedirs("/d")
        fs.random_faults(0.3, ops={"pwrite"})
        fd = fs.open("/d/f", os.O_RDWR | os.O_CREAT)
        outcome = []
        for i in range(50):
            try:
                fs.pwrite(fd, b"x", i)
                outcome.append(True)
            except OSError:
                outcome.append(False)
        return outcome

    assert run(5) == run(5) and run(5) != run(6)
    assert 0 < run(5).count(False) < 50
