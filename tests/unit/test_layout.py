"""recsys.storage.layout: every path of the storage layout (DESIGN.md, "Storage layout")."""

from __future__ import annotations

from datetime import date

import pytest

from recsys.storage import layout

DAY = date(2011, 1, 4)


def test_partition_name_and_parse_roundtrip():
    assert layout.partition_name(DAY) == "dt=2011-01-04"
    assert layout.parse_partition_name("dt=2011-01-04") == DAY
    assert layout.parse_partition_name(layout.partition_name(date(2010, 12, 31))) == date(2010, 12, 31)


@pytest.mark.parametrize(
    "name", ["dt=2011-02-30", "dt=", "dt=yesterday", "date=2011-01-04", "2011-01-04", "_SUCCESS", "dt=2011-1-4"]
)
def test_parse_partition_name_rejects_other_names(name):
    assert layout.parse_partition_name(name) is None


@pytest.mark.parametrize("name", ["dt=20110104", "dt=2011-W01-2"])
def test_parse_partition_name_accepts_only_the_canonical_form(name):
    assert layout.parse_partition_name(name) is None


def test_paths_of_the_layout():
    assert layout.raw_events(DAY) == "raw/events/dt=2011-01-04"
    assert layout.raw_catalog(DAY) == "raw/catalog/dt=2011-01-04"
    assert layout.quarantine_events(DAY) == "quarantine/events/dt=2011-01-04"
    assert layout.features(DAY) == "features/dt=2011-01-04"
    assert layout.vocab_table("users") == "vocab/users.parquet"
    assert layout.model_version(3) == "models/two_tower/versions/3"
    assert layout.validation_report(DAY) == "reports/validation/dt=2011-01-04"
    assert layout.REGISTRY == "registry/two_tower.json"
    assert layout.SUCCESS == "_SUCCESS"
