"""recsys.storage.local.LocalStore and the PartitionStore helpers of recsys.storage.base."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from recsys.config import Settings
from recsys.storage import StorageError, open_store
from recsys.storage.local import LocalStore


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# --- primitives -----------------------------------------------------------------------------------


def test_root_is_resolved_and_created_on_first_write(tmp_path):
    store = LocalStore(tmp_path / "a" / ".." / "store")
    assert store.root == (tmp_path / "store").resolve()
    assert not store.root.exists()
    store.write_bytes("x/y.bin", b"1")
    assert (tmp_path / "store" / "x" / "y.bin").read_bytes() == b"1"


def test_write_bytes_then_read_bytes(store):
    store.write_bytes("raw/events/dt=2011-01-04/part-0.parquet", b"\x00\x01data")
    assert store.read_bytes("raw/events/dt=2011-01-04/part-0.parquet") == b"\x00\x01data"
    assert store.exists("raw/events/dt=2011-01-04/part-0.parquet")
    assert store.exists("raw/events")
    assert not store.exists("raw/catalog")


def test_write_bytes_leaves_no_temporary_files(store):
    store.write_bytes("d/f.txt", b"one")
    store.write_bytes("d/f.txt", b"two")
    assert os.listdir(store.root / "d") == ["f.txt"]


def test_write_bytes_overwrite_replaces_the_content(store):
    store.write_bytes("d/f.txt", b"a much longer first content")
    store.write_bytes("d/f.txt", b"short")
    assert store.read_bytes("d/f.txt") == b"short"


def test_failed_write_keeps_the_old_file_and_cleans_up(store, monkeypatch):
    store.write_bytes("d/f.txt", b"old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        store.write_bytes("d/f.txt", b"new")
    monkeypatch.undo()
    assert store.read_bytes("d/f.txt") == b"old"
    assert os.listdir(store.root / "d") == ["f.txt"]


def test_read_of_a_missing_path_raises_with_the_path(store):
    with pytest.raises(StorageError, match=r"nope/missing\.json") as info:
        store.read_bytes("nope/missing.json")
    assert "does not exist" in str(info.value)


def test_read_of_a_directory_raises(store):
    store.write_bytes("d/f.txt", b"x")
    with pytest.raises(StorageError, match="is a directory"):
        store.read_bytes("d")


@pytest.mark.parametrize("path", ["../x", "a/../../x", "/etc/passwd"])
def test_paths_escaping_the_root_are_refused(store, path):
    with pytest.raises(StorageError, match="escapes the store root"):
        store.write_bytes(path, b"x")
    with pytest.raises(StorageError, match="escapes the store root"):
        store.read_bytes(path)
    with pytest.raises(StorageError, match="escapes the store root"):
        store.exists(path)
    assert not (store.root.parent / "x").exists()


def test_a_symlink_pointing_outside_the_root_is_refused(store, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    store.root.mkdir(parents=True)
    (store.root / "link").symlink_to(outside)
    with pytest.raises(StorageError, match="escapes the store root"):
        store.write_bytes("link/f.txt", b"x")
    assert list(outside.iterdir()) == []


def test_list_dir_returns_sorted_names_and_empty_for_missing(store):
    for name in ["b.txt", "a.txt", "_SUCCESS"]:
        store.write_bytes(f"d/{name}", b"")
    store.write_bytes("d/sub/c.txt", b"")
    assert store.list_dir("d") == ["_SUCCESS", "a.txt", "b.txt", "sub"]
    assert store.list_dir("missing") == []
    assert store.list_dir("d/a.txt") == []  # a file is not a directory


def test_publish_dir_creates_and_replaces_atomically(store, tmp_path):
    first = tmp_path / "first"
    (first / "variables").mkdir(parents=True)
    (first / "old.txt").write_text("old")
    (first / "variables" / "v.bin").write_bytes(b"v1")
    store.publish_dir(first, "models/two_tower/versions/1")
    assert store.list_dir("models/two_tower/versions/1") == ["old.txt", "variables"]

    second = tmp_path / "second"
    second.mkdir()
    (second / "new.txt").write_text("new")
    store.publish_dir(second, "models/two_tower/versions/1")
    # replaced, not merged: old.txt and variables/ are gone
    assert store.list_dir("models/two_tower/versions/1") == ["new.txt"]
    assert store.read_bytes("models/two_tower/versions/1/new.txt") == b"new"
    # no .tmp-/.old- siblings left behind
    assert store.list_dir("models/two_tower/versions") == ["1"]
    # the local source is left as it was
    assert (second / "new.txt").read_text() == "new"


def test_publish_dir_of_a_missing_local_dir_raises(store, tmp_path):
    with pytest.raises(StorageError, match="not a directory"):
        store.publish_dir(tmp_path / "nope", "x")
    assert not store.exists("x")


def test_failed_publish_dir_keeps_the_previous_directory(store, tmp_path, monkeypatch):
    old = tmp_path / "old"
    old.mkdir()
    (old / "tables.npz").write_bytes(b"old")
    store.publish_dir(old, "models/two_tower/versions/1")
    new = tmp_path / "new"
    new.mkdir()
    (new / "tables.npz").write_bytes(b"new")

    real_rename = os.rename
    calls = []

    def rename_fails_second_time(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # first: current -> .old-*, second: .tmp-* -> current
            raise OSError("simulated failure")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename_fails_second_time)
    with pytest.raises((OSError, StorageError), match="simulated failure"):
        store.publish_dir(new, "models/two_tower/versions/1")
    monkeypatch.undo()
    assert store.read_bytes("models/two_tower/versions/1/tables.npz") == b"old"


def test_download_dir_copies_the_tree(store, tmp_path):
    store.write_bytes("v/a.txt", b"a")
    store.write_bytes("v/sub/b.txt", b"b")
    target = tmp_path / "local"
    store.download_dir("v", target)
    assert _tree(target) == ["a.txt", "sub", "sub/b.txt"]
    assert (target / "sub" / "b.txt").read_bytes() == b"b"


def test_download_dir_of_a_missing_dir_raises(store, tmp_path):
    with pytest.raises(StorageError, match="is not a directory"):
        store.download_dir("v", tmp_path / "local")


def test_uri_is_an_absolute_file_uri(store):
    assert store.uri("raw/events") == f"file://{store.root}/raw/events"


def test_open_store_local(tmp_path):
    store = open_store(Settings(storage_root=str(tmp_path / "s")))
    assert isinstance(store, LocalStore)
    assert store.root == (tmp_path / "s").resolve()


def test_open_store_webhdfs_without_url_says_what_to_set():
    with pytest.raises(StorageError, match="set RECSYS_WEBHDFS_URL"):
        open_store(Settings(storage_backend="webhdfs", storage_root="/data/recsys"))


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


def test_mark_success_and_is_complete(store):
    assert not store.is_complete("raw/events/dt=2011-01-04")
    store.mark_success("raw/events/dt=2011-01-04")
    assert store.is_complete("raw/events/dt=2011-01-04")
    assert store.read_bytes("raw/events/dt=2011-01-04/_SUCCESS") == b""


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
