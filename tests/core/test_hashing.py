"""FileParameter content hashes: cached, but never stale after a same-size, same-mtime copy."""

from __future__ import annotations

import os
import pathlib
import subprocess
import time

import luigiflow as lf
from luigiflow._core import hashing
from luigiflow._ops.plan import WILL_RUN, make_plan


class Prices(lf.MlflowTask):
    artifacts = {"prices": "prices.txt"}
    data = lf.FileParameter()

    def run_task(self):
        self.save({"prices": pathlib.Path(self.data).read_text()})


def _wait_until_settled(path: pathlib.Path) -> None:
    # A file changed within the racy window is hashed but not cached (see hashing); the
    # test wants the cached path, so it waits for the file's ctime to leave that window.
    deadline = time.monotonic() + 30
    while time.time_ns() - path.stat().st_ctime_ns <= hashing.RACY_WINDOW_NS:
        assert time.monotonic() < deadline, "clock did not move past the file's ctime"
        time.sleep(0.01)


def test_corrected_same_size_file_copied_with_cp_p_is_noticed(store, tmp_path):
    data = tmp_path / "prices.csv"
    data.write_text("apple,1.10\n")
    _wait_until_settled(data)
    lf.build([Prices(data=str(data))])
    first_ctime = data.stat().st_ctime_ns

    # The fix has the same size, and the same mtime (as files unpacked from one archive):
    # `cp -p` keeps the inode of the target and carries the mtime over; only ctime moves.
    fixed = tmp_path / "fixed.csv"
    fixed.write_text("apple,1.20\n")
    before = data.stat()
    os.utime(fixed, ns=(before.st_atime_ns, before.st_mtime_ns))
    subprocess.run(["cp", "-p", str(fixed), str(data)], check=True)
    after = data.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    )
    assert after.st_ctime_ns != first_ctime

    [entry] = make_plan([Prices(data=str(data))])
    assert entry.status == WILL_RUN
    result = lf.build([Prices(data=str(data))])
    assert result.executed == [Prices(data=str(data))]
    assert Prices(data=str(data)).load_output() == "apple,1.20\n"


def test_a_file_changed_just_now_is_hashed_but_not_cached(tmp_path, monkeypatch):
    # Within one ctime tick a second write is invisible to any stat key, so the digest of
    # a file changed that recently is not kept: the next look reads the bytes again.
    monkeypatch.setenv("LUIGIFLOW_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "d.txt"
    data.write_text("one")
    monkeypatch.setattr(hashing, "RACY_WINDOW_NS", 10**15)  # every file counts as racy
    hashing.content_hash(data)
    assert not any(k.startswith(f"{data.resolve()}|") for k in hashing._memory_hashes)
    assert not (tmp_path / "cache").exists()

    monkeypatch.setattr(hashing, "RACY_WINDOW_NS", 0)
    hashing.content_hash(data)
    assert any(k.startswith(f"{data.resolve()}|") for k in hashing._memory_hashes)
