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


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("dt=2011-01-04", date(2011, 1, 4)),
        ("dt=2012-02-29", date(2012, 2, 29)),  # a leap day
        ("dt=0001-01-01", date(1, 1, 1)),
        # ISO 8601 forms that date.fromisoformat also reads are not partition names
        ("dt=20110104", None),
        ("dt=2011-W01-2", None),
        ("dt=2011-01-04T00:00", None),
        ("dt=2011-01-04 ", None),
    ],
)
def test_parse_partition_name_accepts_only_the_canonical_form(name, expected):
    assert layout.parse_partition_name(name) == expected


def test_paths_of_the_layout():
    assert layout.raw_events(DAY) == "raw/events/dt=2011-01-04"
    assert layout.raw_catalog(DAY) == "raw/catalog/dt=2011-01-04"
    assert layout.quarantine_events(DAY) == "quarantine/events/dt=2011-01-04"
    assert layout.features(DAY) == "features/dt=2011-01-04"
    assert layout.vocab_table("users") == "vocab/users.parquet"
    assert layout.model_version(3) == "models/two_tower/versions/3"
    assert layout.validation_report(DAY) == "reports/validation/dt=2011-01-04"
    assert layout.validation_summary(DAY) == "reports/validation/dt=2011-01-04/summary.json"
    assert layout.REGISTRY == "registry/two_tower.json"
    assert layout.SUCCESS == "_SUCCESS"
