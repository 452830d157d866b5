"""The partition store contract, run against every backend: the local directory and a real HDFS.

Both stores must behave the same for everything the pipeline relies on: atomic replacement of files
and directories through a temporary sibling, markers, listings, error messages that name the path.
The HDFS cases run against the single-node cluster of scripts/hdfs-minicluster.sh (fixture
``hdfs_cluster``) and, through Kerberos (SPNEGO, a ticket from the KDC's keytab), against its Kerberized
twin (fixture ``kerberos_ticket``); they fail, never skip, when it cannot start.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from recsys.storage import StorageError, layout
from recsys.storage.base import HOST_ID, PartitionStore, parse_temporary, temporary_name

pytestmark = pytest.mark.integration

BACKENDS = [
    "local", pytest.param("webhdfs", marks=pytest.mark.hdfs), pytest.param("webhdfs-kerberos", marks=pytest.mark.hdfs),
]


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path) -> PartitionStore:
    if request.param == "local":
        from recsys.storage.local import LocalStore

        return LocalStore(tmp_path / "store")
    if request.param == "webhdfs-kerberos":
        return request.getfixturevalue("kerberos_ticket").store("contract")
    return request.getfixturevalue("hdfs_cluster").store("contract")


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _break_rename_into_place(store: PartitionStore, monkeypatch, calls_before_failure: int) -> None:
    """Make the ``calls_before_failure + 1``-th rename of the store fail (a crash between two steps)."""
    calls: list[object] = []
    real_move = store._move  # type: ignore[attr-defined]

    def failing_move(src, dst, replace):
        calls.append((src, dst))
        if len(calls) == calls_before_failure + 1:
            raise StorageError("simulated failure")
        return real_move(src, dst, replace)

    monkeypatch.setattr(store, "_move", failing_move)


def _temporaries(store: PartitionStore, path: str) -> list[str]:
    """The temporary names under ``path`` (which listings hide)."""
    return sorted(name for name in store._entries(path) or {} if parse_temporary(name))  # type: ignore[attr-defined]


def _version(tmp_path: Path, name: str, content: bytes, files: int = 1) -> Path:
    """A local model version directory: ``tables.npz`` with ``content`` and ``files - 1`` more files."""
    local = tmp_path / name
    (local / "variables").mkdir(parents=True)
    (local / "tables.npz").write_bytes(content)
    for i in range(files - 1):
        (local / "variables" / f"part-{i:03d}").write_bytes(content * 100)
    return local


# --- files ----------------------------------------------------------------------------------------


def test_write_then_read_bytes_and_exists(store):
    store.write_bytes("raw/events/dt=2011-01-04/part-0.parquet", b"\x00\x01data")
    assert store.read_bytes("raw/events/dt=2011-01-04/part-0.parquet") == b"\x00\x01data"
    assert store.exists("raw/events/dt=2011-01-04/part-0.parquet")
    assert store.exists("raw/events")
    assert not store.exists("raw/catalog")
    assert not store.exists("raw/events/dt=2011-01-04/part-1.parquet")


def test_a_file_object_is_written_from_where_it_stands_in_pieces(store, tmp_path):
    """``write_bytes`` of an open file copies its remaining bytes (what the Spark features writer hands over: its
    temporary file, never read into memory whole), atomically as bytes are, replacing an older file."""
    data = os.urandom(2 * 1024 * 1024 + 5)  # two test-HDFS blocks and a bit
    store.write_bytes("features/dt=2011-01-04/examples.parquet", b"old")
    local = tmp_path / "local.bin"
    local.write_bytes(b"skip" + data)
    with open(local, "rb") as fh:
        fh.seek(4)
        store.write_bytes("features/dt=2011-01-04/examples.parquet", fh)
    assert store.read_bytes("features/dt=2011-01-04/examples.parquet") == data
    assert _temporaries(store, "features/dt=2011-01-04") == []


def test_a_file_of_several_blocks_roundtrips(store):
    # the test HDFS has 1 MiB blocks: this file spans four of them
    data = os.urandom(3 * 1024 * 1024 + 17)
    store.write_bytes("models/two_tower/versions/1/tables.npz", data)
    assert store.read_bytes("models/two_tower/versions/1/tables.npz") == data


def test_size_and_byte_ranges_read_a_part_of_a_file(store):
    data = os.urandom(3 * 1024 * 1024 + 17)  # four blocks of the test HDFS
    store.write_bytes("models/two_tower/versions/1/tables.npz", data)
    path = "models/two_tower/versions/1/tables.npz"
    assert store.size(path) == len(data)
    for offset, length in [(0, 10), (1024 * 1024 - 5, 11), (2 * 1024 * 1024 + 3, 1024 * 1024), (len(data) - 4, 4)]:
        assert store.read_range(path, offset, length) == data[offset:offset + length], (offset, length)
    assert store.read_range(path, len(data) - 4, 100) == data[-4:]  # fewer bytes at the end of the file
    assert store.read_range(path, 5, 0) == b""
    with pytest.raises(StorageError, match="does not exist"):
        store.read_range("nope/missing.npz", 0, 10)
    with pytest.raises(StorageError, match="does not exist"):
        store.size("nope/missing.npz")
    with pytest.raises(StorageError, match="is a directory"):
        store.size("models/two_tower/versions/1")


def test_a_stored_table_is_read_by_rows(store, tmp_path):
    import numpy as np

    from recsys.model.tables import StreamedArray, load_tables, open_tables, write_tables

    user = np.arange(50_000 * 8, dtype=np.float32).reshape(50_000, 8)  # 1.5 MiB: spans two blocks
    local = tmp_path / "v1"
    local.mkdir()
    write_tables(local / layout.TABLES_FILE, {
        "user": StreamedArray(user.shape, user.dtype, lambda: iter([user[:30_000], user[30_000:]])),
        "word": np.ones((3, 8), np.float32), "repeat_weight": np.asarray(2.0, np.float32)})
    store.publish_dir(local, layout.model_version(1))
    tables = open_tables(store, 1, ["user"])
    assert tables["user"].shape == user.shape and tables["user"].dtype == user.dtype
    assert tables["user"][32_000:33_000].tobytes() == user[32_000:33_000].tobytes()  # rows in the second block
    assert tables["word"].tobytes() == np.ones((3, 8), np.float32).tobytes() and float(tables["repeat_weight"]) == 2.0
    assert load_tables(store, 1)["user"].tobytes() == user.tobytes()


def test_overwrite_replaces_the_content_and_leaves_no_temporary_files(store):
    store.write_bytes("d/f.txt", b"a much longer first content")
    store.write_bytes("d/f.txt", b"short")
    assert store.read_bytes("d/f.txt") == b"short"
    assert store.list_dir("d") == ["f.txt"]


def test_an_empty_file_is_a_file(store):
    store.write_bytes("d/_SUCCESS", b"")
    assert store.exists("d/_SUCCESS")
    assert store.read_bytes("d/_SUCCESS") == b""


def test_a_failed_write_keeps_the_old_file_and_cleans_up(store, monkeypatch):
    store.write_bytes("d/f.txt", b"old")
    _break_rename_into_place(store, monkeypatch, calls_before_failure=0)
    with pytest.raises((OSError, StorageError), match="simulated failure"):
        store.write_bytes("d/f.txt", b"new")
    monkeypatch.undo()
    assert store.read_bytes("d/f.txt") == b"old"
    assert store.list_dir("d") == ["f.txt"]


def test_reading_a_missing_file_names_it(store):
    with pytest.raises(StorageError, match="does not exist") as info:
        store.read_bytes("nope/missing.json")
    assert store.uri("nope/missing.json") in str(info.value)


def test_reading_a_directory_is_an_error(store):
    store.write_bytes("d/f.txt", b"x")
    with pytest.raises(StorageError, match="is a directory") as info:
        store.read_bytes("d")
    assert store.uri("d") in str(info.value)


@pytest.mark.parametrize("path", ["../x", "a/../../x", "/etc/passwd"])
def test_paths_escaping_the_root_are_refused(store, path):
    for call in (lambda: store.write_bytes(path, b"x"), lambda: store.read_bytes(path), lambda: store.exists(path)):
        with pytest.raises(StorageError, match="escapes the store root"):
            call()


def test_a_path_that_only_looks_like_leaving_the_root_is_fine(store):
    store.write_bytes("a/../b.txt", b"x")
    assert store.list_dir("") == ["b.txt"]


# --- listings and markers ---------------------------------------------------------------------------


def test_list_dir_is_sorted_and_empty_for_missing_paths_and_files(store):
    for name in ["b.txt", "a.txt", "_SUCCESS"]:
        store.write_bytes(f"d/{name}", b"")
    store.write_bytes("d/sub/c.txt", b"")
    assert store.list_dir("d") == ["_SUCCESS", "a.txt", "b.txt", "sub"]
    assert store.list_dir("missing") == []
    assert store.list_dir("d/a.txt") == []


def test_markers_and_partitions(store):
    assert not store.is_complete("raw/events/dt=2011-01-04")
    store.mark_success("raw/events/dt=2011-01-05")
    store.mark_success("raw/events/dt=2011-01-04")
    store.write_bytes("raw/events/dt=2011-01-06/part-0.parquet", b"x")  # no marker: still being written
    store.mark_success("raw/events/other")
    assert store.is_complete("raw/events/dt=2011-01-04")
    assert store.read_bytes("raw/events/dt=2011-01-04/_SUCCESS") == b""
    assert store.partitions("raw/events") == [date(2011, 1, 4), date(2011, 1, 5)]
    assert store.partitions("raw/events", complete_only=False) == [date(2011, 1, 4), date(2011, 1, 5), date(2011, 1, 6)]
    assert store.partitions("raw/nothing") == []


def test_data_files_skip_metadata_names(store):
    d = layout.raw_events(date(2011, 1, 4))
    for name in ["part-1.csv", "part-0.parquet", "_SUCCESS", "_source_stats.json"]:
        store.write_bytes(f"{d}/{name}", b"")
    assert store.data_files(d) == [f"{d}/part-0.parquet", f"{d}/part-1.csv"]


def test_json_and_parquet_roundtrip(store):
    store.write_json("registry/two_tower.json", {"b": 1, "a": [1, 2], "day": date(2011, 1, 4)})
    assert store.read_bytes("registry/two_tower.json") == (
        b'{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1,\n  "day": "2011-01-04"\n}\n'
    )
    frame = pd.DataFrame({"user_id": ["u1", "u2"], "n": [1, 2]})
    store.write_parquet("features/dt=2011-01-04/examples.parquet", frame)
    pd.testing.assert_frame_equal(store.read_parquet("features/dt=2011-01-04/examples.parquet"), frame)
    assert pd.read_parquet(io.BytesIO(store.read_bytes("features/dt=2011-01-04/examples.parquet"))).shape == (2, 2)


# --- directories ------------------------------------------------------------------------------------


def test_publish_dir_creates_and_replaces_without_merging(store, tmp_path):
    first = tmp_path / "first"
    (first / "variables").mkdir(parents=True)
    (first / "empty").mkdir()
    (first / "old.txt").write_text("old")
    (first / "variables" / "v.bin").write_bytes(b"v1")
    store.publish_dir(first, "models/two_tower/versions/1")
    assert store.list_dir("models/two_tower/versions/1") == ["empty", "old.txt", "variables"]
    assert store.read_bytes("models/two_tower/versions/1/variables/v.bin") == b"v1"

    second = tmp_path / "second"
    second.mkdir()
    (second / "new.txt").write_text("new")
    store.publish_dir(second, "models/two_tower/versions/1")
    assert store.list_dir("models/two_tower/versions/1") == ["new.txt"]
    assert store.read_bytes("models/two_tower/versions/1/new.txt") == b"new"
    # no .tmp-/.old- siblings, and the version was replaced, not nested inside the old one
    assert store.list_dir("models/two_tower/versions") == ["1"]
    assert (second / "new.txt").read_text() == "new"


def test_publish_dir_of_a_missing_local_dir_raises(store, tmp_path):
    with pytest.raises(StorageError, match="not a directory"):
        store.publish_dir(tmp_path / "nope", "x")
    assert not store.exists("x")


@pytest.mark.parametrize("path", ["", ".", "a/.."])
def test_publish_dir_over_the_root_is_refused(store, tmp_path, path):
    store.write_bytes("keep.txt", b"x")
    with pytest.raises(StorageError, match="store root"):
        store.publish_dir(_version(tmp_path, "v", b"v"), path)
    assert store.list_dir("") == ["keep.txt"]


def test_a_failed_publish_keeps_the_previous_directory(store, tmp_path, monkeypatch):
    old = tmp_path / "old"
    old.mkdir()
    (old / "tables.npz").write_bytes(b"old")
    store.publish_dir(old, "models/two_tower/versions/1")
    new = tmp_path / "new"
    new.mkdir()
    (new / "tables.npz").write_bytes(b"new")
    _break_rename_into_place(store, monkeypatch, calls_before_failure=1)  # old moved aside, new fails
    with pytest.raises((OSError, StorageError), match="simulated failure"):
        store.publish_dir(new, "models/two_tower/versions/1")
    monkeypatch.undo()
    assert store.read_bytes("models/two_tower/versions/1/tables.npz") == b"old"
    assert store.list_dir("models/two_tower/versions") == ["1"]


def test_download_dir_copies_the_tree(store, tmp_path):
    store.write_bytes("v/a.txt", b"a")
    store.write_bytes("v/sub/b.txt", b"b")
    target = tmp_path / "local"
    store.download_dir("v", target)
    assert _tree(target) == ["a.txt", "sub", "sub/b.txt"]
    assert (target / "sub" / "b.txt").read_bytes() == b"b"
    # into an existing directory: merged, as shutil.copytree(dirs_exist_ok=True) does
    store.download_dir("v", target)
    assert _tree(target) == ["a.txt", "sub", "sub/b.txt"]


def test_download_dir_of_a_missing_dir_or_a_file_raises(store, tmp_path):
    with pytest.raises(StorageError, match="is not a directory"):
        store.download_dir("v", tmp_path / "local")
    store.write_bytes("f.txt", b"x")
    with pytest.raises(StorageError, match="is not a directory"):
        store.download_dir("f.txt", tmp_path / "local2")


def test_publish_then_download_is_the_identity(store, tmp_path):
    source = tmp_path / "src"
    (source / "variables").mkdir(parents=True)
    (source / "saved_model.pb").write_bytes(os.urandom(2048))
    (source / "variables" / "variables.data-00000-of-00001").write_bytes(os.urandom(1024 * 1024 + 5))
    store.publish_dir(source, "models/two_tower/versions/7")
    back = tmp_path / "back"
    store.download_dir("models/two_tower/versions/7", back)
    assert _tree(back) == _tree(source)
    for rel in _tree(source):
        if (source / rel).is_file():
            assert (back / rel).read_bytes() == (source / rel).read_bytes()


# --- crashes while publishing a directory (fault injection) ----------------------------------------
VERSIONS = "models/two_tower/versions"
V1 = f"{VERSIONS}/1"

# A child process that publishes a directory and is killed (SIGKILL, by itself: a deterministic point)
# between the two renames or in the middle of the copy, as ``kill -9`` or an OOM kill would stop it.
_PUBLISH_AND_DIE = """
import json, os, posixpath, shutil, signal, sys
from pathlib import Path
spec = json.loads(sys.argv[1])
if spec["backend"] == "local":
    from recsys.storage.local import LocalStore
    store = LocalStore(spec["root"])
else:
    from recsys.storage.webhdfs import WebHDFSStore
    store = WebHDFSStore(spec["url"], spec["root"], user=spec["user"], auth=spec["auth"])
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
if spec["kill"] == "between-renames":
    real_move = store._move
    def move(src, dst, replace):
        real_move(src, dst, replace)
        if posixpath.basename(dst).startswith(".old-"):
            die()  # the previous version moved aside, the new one not yet in place
    store._move = move
else:  # during-copy: after the second file of the tree was copied
    copied = []
    def counting(real):
        def copy(*args, **kwargs):
            result = real(*args, **kwargs)
            copied.append(1)
            if len(copied) == 2:
                die()
            return result
        return copy
    if spec["backend"] == "local":
        shutil.copyfile = counting(shutil.copyfile)
    else:
        store.client.write = counting(store.client.write)
store.publish_dir(Path(spec["source"]), spec["path"])
sys.exit("the publish finished: it should have been killed")
"""


def _publish_and_die(store: PartitionStore, source: Path, path: str, kill: str) -> None:
    """Publish ``source`` to ``path`` in a child process killed with SIGKILL at point ``kill``."""
    if store.uri("").startswith("file://"):
        spec = {"backend": "local", "root": str(store.root)}  # type: ignore[attr-defined]
    else:
        spec = {
            "backend": "webhdfs", "url": store.url, "root": store.root,  # type: ignore[attr-defined]
            "user": store.user, "auth": store.auth,  # type: ignore[attr-defined]
        }
    spec |= {"source": str(source), "path": path, "kill": kill}
    child = subprocess.run(
        [sys.executable, "-c", _PUBLISH_AND_DIE, json.dumps(spec)], capture_output=True, text=True, timeout=120
    )
    assert child.returncode == -signal.SIGKILL, child.stderr


def _crash_between_the_renames(store: PartitionStore, tmp_path: Path, monkeypatch) -> None:
    """Publish v1 "old", then crash a publish of "new" after it moved v1 aside (an exception, no undo)."""
    store.publish_dir(_version(tmp_path, "old", b"old"), V1)
    _break_rename_into_place(store, monkeypatch, calls_before_failure=2)  # tmp -> new, v1 -> old, new -> v1
    monkeypatch.setattr(store, "_undo_swap", lambda *args: False)  # the process died: nothing cleans up
    with pytest.raises(StorageError, match="simulated failure"):
        store.publish_dir(_version(tmp_path, "new", b"new"), V1)
    monkeypatch.undo()
    assert not store._present(V1)  # type: ignore[attr-defined]
    assert [name[:5] for name in _temporaries(store, VERSIONS)] == [".new-", ".old-"]


def test_a_failed_swap_puts_the_previous_directory_back(store, tmp_path, monkeypatch):
    store.publish_dir(_version(tmp_path, "old", b"old"), V1)
    _break_rename_into_place(store, monkeypatch, calls_before_failure=2)
    with pytest.raises(StorageError, match="simulated failure"):
        store.publish_dir(_version(tmp_path, "new", b"new"), V1)
    monkeypatch.undo()
    assert store.read_bytes(f"{V1}/tables.npz") == b"old"
    assert _temporaries(store, VERSIONS) == []


def test_a_failed_copy_keeps_the_previous_directory_and_leaves_nothing(store, tmp_path, monkeypatch):
    store.publish_dir(_version(tmp_path, "old", b"old"), V1)
    real_copy = store._copy_tree  # type: ignore[attr-defined]

    def copy_then_fail(local_dir, path):
        real_copy(local_dir, path)
        raise StorageError("simulated failure")

    monkeypatch.setattr(store, "_copy_tree", copy_then_fail)
    with pytest.raises(StorageError, match="simulated failure"):
        store.publish_dir(_version(tmp_path, "new", b"new"), V1)
    monkeypatch.undo()
    assert store.read_bytes(f"{V1}/tables.npz") == b"old"
    assert _temporaries(store, VERSIONS) == []


@pytest.mark.parametrize(
    "operation",
    [
        lambda store, tmp_path: store.exists(V1),
        lambda store, tmp_path: store.read_bytes(f"{V1}/tables.npz"),
        lambda store, tmp_path: store.list_dir(VERSIONS),
        lambda store, tmp_path: store.list_dir(V1),
        lambda store, tmp_path: store.download_dir(V1, tmp_path / "down"),
    ],
    ids=["exists", "read_bytes", "list_dir-parent", "list_dir", "download_dir"],
)
def test_the_next_operation_finishes_a_publish_that_crashed_between_the_renames(
    store, tmp_path, monkeypatch, operation
):
    _crash_between_the_renames(store, tmp_path, monkeypatch)
    operation(store, tmp_path)
    assert store.read_bytes(f"{V1}/tables.npz") == b"new"  # the complete new copy was swapped in
    assert store.list_dir(VERSIONS) == ["1"]
    assert _temporaries(store, VERSIONS) == []


def test_a_rerun_of_a_publish_that_crashed_between_the_renames_succeeds(store, tmp_path, monkeypatch):
    _crash_between_the_renames(store, tmp_path, monkeypatch)
    store.publish_dir(_version(tmp_path, "rerun", b"rerun"), V1)
    assert store.read_bytes(f"{V1}/tables.npz") == b"rerun"
    assert _temporaries(store, VERSIONS) == []


def test_a_directory_left_aside_by_an_older_release_is_put_back(store, tmp_path):
    # what a crash of the previous publish_dir left (issue 18, #4): only .old-<uuid>-1, no version 1
    store.publish_dir(_version(tmp_path, "old", b"old"), V1)
    store._move(V1, f"{VERSIONS}/.old-{'ab' * 16}-1", replace=False)  # type: ignore[attr-defined]
    store.write_bytes(f"{VERSIONS}/2/tables.npz", b"v2")
    assert store.read_bytes(f"{V1}/tables.npz") == b"old"
    assert store.list_dir(VERSIONS) == ["1", "2"]
    assert _temporaries(store, VERSIONS) == []


def test_kill_9_between_the_renames_then_the_next_read_finishes_the_publish(store, tmp_path):
    store.publish_dir(_version(tmp_path, "old", b"old"), V1)
    _publish_and_die(store, _version(tmp_path, "new", b"new"), V1, "between-renames")
    assert not store._present(V1)  # type: ignore[attr-defined]
    assert [name[:5] for name in _temporaries(store, VERSIONS)] == [".new-", ".old-"]
    assert store.read_bytes(f"{V1}/tables.npz") == b"new"
    assert store.list_dir(VERSIONS) == ["1"]
    assert _temporaries(store, VERSIONS) == []


def test_kill_9_between_the_renames_then_a_rerun_publishes(store, tmp_path):
    store.publish_dir(_version(tmp_path, "old", b"old"), V1)
    _publish_and_die(store, _version(tmp_path, "new", b"new"), V1, "between-renames")
    store.publish_dir(_version(tmp_path, "rerun", b"rerun"), V1)
    assert store.read_bytes(f"{V1}/tables.npz") == b"rerun"
    assert _temporaries(store, VERSIONS) == []


def test_kill_9_during_the_copy_keeps_the_old_version_and_the_rerun_cleans_up(store, tmp_path):
    store.publish_dir(_version(tmp_path, "old", b"old"), V1)
    _publish_and_die(store, _version(tmp_path, "new", b"new", files=5), V1, "during-copy")
    left = _temporaries(store, VERSIONS)
    assert [name[:5] for name in left] == [".tmp-"]  # the half copy of the dead process
    assert store.read_bytes(f"{V1}/tables.npz") == b"old"
    store.publish_dir(_version(tmp_path, "rerun", b"rerun", files=3), V1)
    assert store.read_bytes(f"{V1}/tables.npz") == b"rerun"
    assert _temporaries(store, VERSIONS) == []


def test_kill_9_during_the_first_copy_leaves_no_version_and_the_rerun_cleans_up(store, tmp_path):
    _publish_and_die(store, _version(tmp_path, "new", b"new", files=5), V1, "during-copy")
    assert [name[:5] for name in _temporaries(store, VERSIONS)] == [".tmp-"]
    store.publish_dir(_version(tmp_path, "rerun", b"rerun", files=3), V1)
    assert store.read_bytes(f"{V1}/tables.npz") == b"rerun"
    assert _temporaries(store, VERSIONS) == []
    assert store.list_dir(VERSIONS) == ["1"]


def test_a_half_copy_of_a_dead_process_is_deleted_by_the_next_look_at_its_path(store, tmp_path):
    _publish_and_die(store, _version(tmp_path, "new", b"new", files=5), V1, "during-copy")
    assert [name[:5] for name in _temporaries(store, VERSIONS)] == [".tmp-"]
    assert not store.exists(V1)
    assert _temporaries(store, VERSIONS) == []


def test_listings_hide_temporaries_and_delete_stale_ones(store):
    live = temporary_name("tmp", "a.txt")  # this process: still writing
    dead = temporary_name("tmp", "b.txt", token=f"{int(time.time())}-{_dead_pid()}-{HOST_ID}-00000000")
    old = temporary_name("tmp", "c", token="1000000000-1-ffffffff-00000000")  # another host, years ago
    for name in (live, dead, f"{old}/f.bin", "a.txt"):
        store.write_bytes(f"d/{name}", b"x")
    assert store.list_dir("d") == ["a.txt"]
    assert _temporaries(store, "d") == [live]
    assert store.data_files("d") == ["d/a.txt"]


def _dead_pid() -> int:
    """The pid of a process that has exited (and was reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# --- locations --------------------------------------------------------------------------------------


def test_uri_is_absolute_and_names_the_backend(store):
    uri = store.uri("raw/events")
    if uri.startswith("file://"):
        assert uri == f"file://{store.root}/raw/events"  # type: ignore[attr-defined]
    else:
        netloc = store.url.split("://", 1)[1]  # type: ignore[attr-defined]
        assert netloc in ("127.0.0.1:9870", "localhost:9871")
        assert uri == f"webhdfs://{netloc}{store.root}/raw/events"  # type: ignore[attr-defined]


# --- exclusive creation and the store lock (recsys.storage.lock: the registry's writers serialise on it) -----------


def test_create_exclusive_creates_once_and_never_replaces(store):
    assert store.create_exclusive("locks/a/000000000001", b'{"owner": "first"}')
    assert not store.create_exclusive("locks/a/000000000001", b'{"owner": "second"}')
    assert store.read_bytes("locks/a/000000000001") == b'{"owner": "first"}'
    store.write_bytes("locks/b/f", b"x")
    assert not store.create_exclusive("locks/b", b"over a directory")
    assert store.list_dir("locks/a") == ["000000000001"]
    assert _temporaries(store, "locks/a") == [] and _temporaries(store, "locks") == []


def test_of_concurrent_exclusive_creations_exactly_one_succeeds(store):
    from concurrent.futures import ThreadPoolExecutor

    stores = [store.fork() for _ in range(4)]  # a client each, as separate processes have
    for attempt in range(3):
        path = f"locks/c/{attempt}"
        with ThreadPoolExecutor(4) as pool:
            won = list(pool.map(lambda s, n: s.create_exclusive(path, f"{n}".encode()), stores, range(4)))  # noqa: B023
        assert won.count(True) == 1
        assert store.read_bytes(path) == str(won.index(True)).encode()


def test_the_store_lock_has_one_holder_and_an_expired_one_is_taken_over(store):
    from recsys.storage.lock import LockLost, StoreLock

    first = StoreLock(store, "locks/registry", run_id="first", expiry=1.0)
    second = StoreLock(store, "locks/registry", run_id="second", expiry=1.0)
    assert first.try_acquire()
    assert not second.try_acquire()
    first.check()
    first.release()
    assert second.try_acquire()  # released: the next one takes it
    time.sleep(1.2)  # second froze past its expiry without a refresh
    third = StoreLock(store, "locks/registry", run_id="third")
    assert third.try_acquire()
    assert third.holder()[1]["run_id"] == "third"
    with pytest.raises(LockLost, match="taken over by run third"):
        second.check()
    third.release()


def test_a_holder_working_on_the_store_keeps_its_lock_refreshed_from_another_thread(store, caplog):
    from recsys.storage.lock import store_lock

    with store_lock(store, "locks/busy", run_id="busy", expiry=0.6) as lock:
        started = time.monotonic()
        while time.monotonic() - started < 2.0:  # the holder's own calls beside the refreshes
            store.write_bytes("locks/work", b"x")
            assert store.read_bytes("locks/work") == b"x"
        lock.check()
    assert "refreshing the lock" not in caplog.text
