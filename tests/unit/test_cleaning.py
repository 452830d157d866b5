"""recsys.features.cleaning: every dropped row is counted."""

from __future__ import annotations

from recsys.features.cleaning import CleaningStats, clean_events


def test_clean_events_drops_and_counts_duplicates_and_non_positive_quantities(make_events):
    events = make_events(
        [
            ("e1", "2011-01-04 09:00:00", "u1", "i1", "purchase", 1, 1.0),
            ("e2", "2011-01-04 09:01:00", "u1", "i2", "purchase", 2, 1.0),
            ("e2", "2011-01-04 09:02:00", "u2", "i9", "purchase", 5, 1.0),  # repeated id: dropped
            ("e3", "2011-01-04 09:03:00", "u2", "i3", "purchase", 0, 1.0),  # quantity 0: dropped
            ("e4", "2011-01-04 09:04:00", "u2", "i4", "purchase", -1, 1.0),  # negative: dropped
            ("e5", "2011-01-04 09:05:00", "u3", "i5", "purchase", 3, 1.0),
            ("e3", "2011-01-04 09:06:00", "u3", "i6", "purchase", 4, 1.0),  # repeat of e3: dropped as repeat
        ]
    )
    cleaned, stats = clean_events(events)
    # 7 in; repeats: 2nd e2, 2nd e3 -> 5 left; of those e3 (0) and e4 (-1) are non-positive -> 3 out
    assert stats == CleaningStats(rows_in=7, rows_out=3, duplicate_event_ids=2, invalid_ids=0, non_positive_quantity=2)
    assert stats.rows_in == stats.rows_out + stats.duplicate_event_ids + stats.non_positive_quantity
    assert list(cleaned["event_id"]) == ["e1", "e2", "e5"]
    assert list(cleaned["quantity"]) == [1, 2, 3]  # the first e2 is the one kept
    assert list(cleaned["item_id"]) == ["i1", "i2", "i5"]
    assert list(cleaned.index) == [0, 1, 2]


def test_clean_events_keeps_a_clean_partition_whole(make_events):
    events = make_events(
        [
            ("e1", "2011-01-04 09:00:00", "u1", "i1", "purchase", 1, 1.0),
            ("e2", "2011-01-04 09:01:00", "u2", "i1", "view", 1, 0.0),
        ]
    )
    cleaned, stats = clean_events(events)
    assert stats.as_dict() == {"rows_in": 2, "rows_out": 2, "duplicate_event_ids": 0, "invalid_ids": 0,
                               "non_positive_quantity": 0}
    assert list(cleaned["event_id"]) == ["e1", "e2"]


def test_clean_events_of_an_empty_frame(make_events):
    cleaned, stats = clean_events(make_events([]))
    assert stats == CleaningStats(0, 0, 0, 0, 0)
    assert cleaned.empty


def test_clean_events_drops_and_counts_rows_with_ids_that_are_not_ids(make_events):
    """Only a partition on-call accepted despite failed validation has them; the service could never serve
    them, and ' 17135' would be another customer than '17135' (issue 18 #8)."""
    events = make_events(
        [
            ("e1", "2011-01-04 09:00:00", "17135", "85123A", "purchase", 1, 1.0),
            ("e2", "2011-01-04 09:01:00", " 17135", "85123A", "purchase", 1, 1.0),  # leading space
            ("e3", "2011-01-04 09:02:00", "17135", "a\u202eb", "purchase", 1, 1.0),  # right-to-left override
            ("e4", "2011-01-04 09:03:00", None, "85123A", "purchase", 1, 1.0),  # no customer
            ("e5", "2011-01-04 09:04:00", "a\u202eb", "22423", "purchase", 0, 1.0),  # counted once, as an id
            ("e1", "2011-01-04 09:05:00", " 17135", "22423", "purchase", 1, 1.0),  # a repeat first
            ("e6", "2011-01-04 09:06:00", "17136", "x" * 11, "purchase", 1, 1.0),  # longer than allowed
            ("e7", "2011-01-04 09:07:00", "17136", "22423", "purchase", -1, 1.0),
            ("e8", "2011-01-04 09:08:00", "17136", "22423", "purchase", 2, 1.0),
        ]
    )
    cleaned, stats = clean_events(events, max_id_length=10)
    assert stats == CleaningStats(rows_in=9, rows_out=2, duplicate_event_ids=1, invalid_ids=5, non_positive_quantity=1)
    assert list(cleaned["event_id"]) == ["e1", "e8"]
    assert list(cleaned.index) == [0, 1]
