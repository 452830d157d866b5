"""The temporary names of recsys.storage.base: what they record and when one is stale."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from recsys.storage.base import HOST_ID, STALE_SECONDS, Temporary, is_stale, parse_temporary, temporary_name

NOW = 2_000_000_000.0


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_temporary_name_records_its_target_time_and_owner():
    name = temporary_name("tmp", "dt=2011-01-04")
    tmp = parse_temporary(name)
    assert tmp is not None
    assert (tmp.entry, tmp.kind, tmp.target, tmp.pid, tmp.host) == (name, "tmp", "dt=2011-01-04", os.getpid(), HOST_ID)
    assert tmp.created == pytest.approx(time.time(), abs=5)


def test_the_three_kinds_share_a_token_and_names_with_dashes_survive():
    names = [temporary_name(kind, "a-b-c", token="1700000000-42-0123abcd-deadbeef") for kind in ("tmp", "new", "old")]
    assert names == [f".{k}-1700000000-42-0123abcd-deadbeef-a-b-c" for k in ("tmp", "new", "old")]
    kinds = ("tmp", "new", "old")
    expected = [Temporary(n, k, "a-b-c", 1700000000.0, 42, "0123abcd") for n, k in zip(names, kinds, strict=True)]
    assert [parse_temporary(n) for n in names] == expected


@pytest.mark.parametrize(
    ("entry", "kind", "target"),
    [(f".tmp-{'a' * 32}-1", "tmp", "1"), (f".old-{'0' * 32}-tables.npz", "old", "tables.npz")],
)
def test_names_of_the_previous_release_are_temporaries_without_an_owner(entry, kind, target):
    assert parse_temporary(entry) == Temporary(entry, kind, target)


@pytest.mark.parametrize("entry", ["1", "_SUCCESS", ".tmp", ".tmp-x-1", ".new-abc-1", "part-0.parquet", ".hidden"])
def test_ordinary_names_are_not_temporaries(entry):
    assert parse_temporary(entry) is None


def test_staleness_by_owner_and_age():
    mine = Temporary("t", "tmp", "1", NOW, os.getpid(), HOST_ID)
    dead = Temporary("t", "tmp", "1", NOW, _dead_pid(), HOST_ID)
    elsewhere = Temporary("t", "tmp", "1", NOW, 1, "ffffffff")
    assert is_stale(dead, mtime=NOW, now=NOW)  # its process is gone: at once
    assert not is_stale(mine, mtime=NOW, now=NOW + 60)
    assert not is_stale(elsewhere, mtime=NOW, now=NOW + STALE_SECONDS - 1)  # another host: only by age
    assert is_stale(elsewhere, mtime=NOW, now=NOW + STALE_SECONDS + 1)
    legacy = Temporary("t", "tmp", "1")
    assert not is_stale(legacy, mtime=NOW, now=NOW + 60)  # no owner recorded: by modification time
    assert is_stale(legacy, mtime=NOW, now=NOW + STALE_SECONDS + 1)
