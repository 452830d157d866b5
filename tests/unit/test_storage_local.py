"""What is particular to recsys.storage.local.LocalStore, and the PartitionStore helpers of recsys.storage.base.

The store contract both backends share (files, listings, directories, crashes while publishing) is
tests/integration/test_store_contract.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from recsys.config import Settings
from recsys.storage import StorageError, local, open_store
from recsys.storage.local import LocalStore

# --- primitives -----------------------------------------------------------------------------------


def test_root_is_resolved_and_created_on_first_write(tmp_path):
    store = LocalStore(tmp_path / "a" / ".." / "store")
    assert store.root == (tmp_path / "store").resolve()
    assert not store.root.exists()
    store.write_bytes("x/y.bin", b"1")
    assert (tmp_path / "store" / "x" / "y.bin").read_bytes() == b"1"


def test_a_symlink_pointing_outside_the_root_is_refused(store, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    store.root.mkdir(parents=True)
    (store.root / "link").symlink_to(outside)
    with pytest.raises(StorageError, match="escapes the store root"):
        store.write_bytes("link/f.txt", b"x")
    assert list(outside.iterdir()) == []


def test_a_rename_into_place_never_replaces_an_empty_directory(store, tmp_path):
    # os.rename replaces an empty directory: a repair racing a publish of an empty tree must not
    store.write_bytes("a/f.txt", b"x")
    (store.root / "b").mkdir()
    with pytest.raises(StorageError, match="renaming"):
        store._move("a", "b", replace=False)
    assert (store.root / "a" / "f.txt").exists() and list((store.root / "b").iterdir()) == []


def test_without_renameat2_a_rename_into_place_still_never_replaces(store, monkeypatch):
    monkeypatch.setattr(local, "_renameat2", None)
    store.write_bytes("a/f.txt", b"x")
    (store.root / "b").mkdir()
    with pytest.raises(StorageError, match="exists"):
        store._move("a", "b", replace=False)
    store._move("a", "c", replace=False)
    assert store.read_bytes("c/f.txt") == b"x"


def test_a_crash_during_a_file_write_leaves_a_temporary_the_next_listing_deletes(store, monkeypatch):
    store.write_bytes("d/f.txt", b"old")
    monkeypatch.setattr(os, "getpid", lambda: _dead_pid())  # the temporary of a process that died

    def killed(src, dst, replace):
        raise KeyboardInterrupt  # stands for the kill: no cleanup runs in a killed process

    monkeypatch.setattr(store, "_move", killed)
    monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: None)
    with pytest.raises(KeyboardInterrupt):
        store.write_bytes("d/f.txt", b"new")
    monkeypatch.undo()
    assert len(os.listdir(store.root / "d")) == 2
    assert store.list_dir("d") == ["f.txt"]
    assert os.listdir(store.root / "d") == ["f.txt"]
    assert store.read_bytes("d/f.txt") == b"old"


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_open_store_local(tmp_path):
    store = open_store(Settings(storage_root=str(tmp_path / "s")))
    assert isinstance(store, LocalStore)
    assert store.root == (tmp_path / "s").resolve()


# --- helpers of PartitionStore ---------------------------------------------------------------------


def test_write_json_roundtrip_and_stable_bytes(store):
    store.write_json("r/a.json", {"b": 1, "a": [1, 2], "day": date(2011, 1, 4)})
    store.write_json("r/b.json", {"day": date(2011, 1, 4), "a": [1, 2], "b": 1})
    expected = b'{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1,\n  "day": "2011-01-04"\n}\n'
    assert store.read_bytes("r/a.json") == expected
    assert store.read_bytes("r/b.json") == expected
    assert store.read_json("r/a.json") == {"a": [1, 2], "b": 1, "day": "2011-01-04"}


def test_read_json_of_invalid_json_raises_storage_error(store):
    store.write_bytes("r/bad.json", b'{"a": ')
    with pytest.raises(StorageError, match="is not valid JSON") as info:
        store.read_json("r/bad.json")
    assert "r/bad.json" in str(info.value)
    store.write_bytes("r/latin1.json", b'"\xff"')
    with pytest.raises(StorageError, match="is not valid JSON"):
        store.read_json("r/latin1.json")


def test_read_json_of_missing_file_raises_storage_error(store):
    with pytest.raises(StorageError, match="does not exist"):
        store.read_json("registry/two_tower.json")


def test_parquet_roundtrip(store, make_events):
    frame = make_events([("1-0", "2011-01-04 10:00:00", "u1", "i1", "purchase", 2, 1.5)])
    store.write_parquet("p/part.parquet", frame)
    back = store.read_parquet("p/part.parquet")
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)
    assert back["event_time"].iloc[0] == pd.Timestamp("2011-01-04 10:00:00", tz="UTC")
    assert back["quantity"].dtype == "int64"


def test_partitions_lists_complete_dt_dirs_sorted(store):
    store.mark_success("raw/events/dt=2011-01-05")
    store.mark_success("raw/events/dt=2011-01-04")
    store.write_bytes("raw/events/dt=2011-01-06/part-0.parquet", b"x")  # no marker: still being written
    store.mark_success("raw/events/other")
    store.mark_success("raw/events/dt=not-a-date")
    assert store.partitions("raw/events") == [date(2011, 1, 4), date(2011, 1, 5)]
    assert store.partitions("raw/events", complete_only=False) == [
        date(2011, 1, 4), date(2011, 1, 5), date(2011, 1, 6),
    ]
    assert store.partitions("raw/nothing") == []


def test_data_files_ignores_metadata_names(store):
    d = "raw/events/dt=2011-01-04"
    for name in ["part-1.csv", "part-0.parquet", "_SUCCESS", "_source_stats.json", ".tmp-abc-part-2.parquet"]:
        store.write_bytes(f"{d}/{name}", b"")
    assert store.data_files(d) == [f"{d}/part-0.parquet", f"{d}/part-1.csv"]
    assert store.data_files("raw/events/dt=2011-01-05") == []
