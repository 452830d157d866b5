"""Validate and build-features in bounded chunks (``RECSYS_CHUNK_ROWS``, issue 14) give the outputs of one chunk.

The same raw partitions go through both steps twice, in stores of their own: once with chunks of
:data:`SMALL` rows (several chunks per partition, some part files cut in the middle) and once with the
default chunk size (one chunk: the suite runs over the whole partition as one frame, as before chunking).
Everything the steps write must be equal: the validation summary (verdict, checks, observed values,
unexpected counts and examples, notes, margins), the Great Expectations result the Data Docs render, the
quarantine reason of a failing partition, and the examples, query histories, history snapshots, stats
and vocabularies of the features.

Data: three real Online Retail days (``/work/shared/data``); the third gets bad rows spread over all of its
chunks (more than 20 invalid ids, events outside the day, a null user, repeated event ids across chunks),
so it fails, is quarantined, and is then accepted by on-call and built like the others. And two synthetic
days (:mod:`recsys.datasets.synthetic`) in part files of their own.
"""

from __future__ import annotations

import json
import shutil
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from recsys import schema
from recsys.config import Settings
from recsys.datasets.landing import land_days
from recsys.datasets.synthetic import SyntheticConfig, publish_days
from recsys.features import build_features, chunks, vocab
from recsys.features.build import FeatureError, day_pairs
from recsys.features.chunks import ChunkReader, FirstOccurrence
from recsys.features.cleaning import clean_events
from recsys.storage import layout
from recsys.storage.local import LocalStore
from recsys.storage.raw import read_delivery
from recsys.validation import validate_partition
from recsys.validation.docs import RESULTS_DIR, SITE_DIR
from recsys.validation.partition import ValidationFailed
from recsys.validation.suites import EVENTS_SUITE

SOURCE = Path("/work/shared/data/online-retail")
FIRST = date(2010, 12, 1)
SYNTHETIC_FIRST = date(2011, 3, 1)
SMALL = 500
ONE_CHUNK = 1_000_000
BAD_IDS = 26  # more than GX's 20 partial unexpected values: the merged list must be the first 20 of them


def _spoil(store: LocalStore, day: date) -> None:
    """Bad rows spread over every chunk of ``day``: invalid user ids, times outside the day, a null user,
    event ids repeating rows of earlier chunks."""
    partition = layout.raw_events(day)
    path = f"{partition}/{store.data_files(partition)[0].rpartition('/')[2]}"
    events = store.read_parquet(path)
    rows = np.linspace(0, len(events) - 1, BAD_IDS + 6).astype(int)
    bad = rows[:BAD_IDS]
    events.loc[bad, schema.USER_ID] = [f"bad\tid{n}" for n in range(BAD_IDS)]
    events.loc[rows[BAD_IDS:BAD_IDS + 3], schema.EVENT_TIME] = pd.Timestamp(day - timedelta(days=3), tz="UTC")
    events.loc[rows[BAD_IDS + 3], schema.USER_ID] = pd.NA
    events.loc[rows[-2:], schema.EVENT_ID] = events.loc[rows[:2], schema.EVENT_ID].to_numpy()
    events = events.astype(schema.EVENT_DTYPES)
    store.write_parquet(path, events)


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> tuple[Path, list[date], list[date]]:
    """A store root holding only raw partitions: three Online Retail days (the last one spoiled), two synthetic."""
    root = tmp_path_factory.mktemp("raw")
    store = LocalStore(root)
    retail = [landed.day for landed in land_days(store, FIRST, 3, source=SOURCE)]
    _spoil(store, retail[-1])
    config = SyntheticConfig(events=2_400, users=400, items=300, chunk_events=900, seed=11)
    synthetic = [g.day for g in publish_days(store, config, SYNTHETIC_FIRST, 2)]
    return root, retail, synthetic


def _steps(raw: tuple[Path, list[date], list[date]], root: Path, chunk_rows: int) -> dict[str, Any]:
    """Validate and build every raw day (retail, then synthetic in a store of its own) with ``chunk_rows``."""
    source, retail, synthetic = raw
    outcome: dict[str, Any] = {}
    for name, days in (("retail", retail), ("synthetic", synthetic)):
        target = root / name
        shutil.copytree(source / "raw", target / "raw")
        store = LocalStore(target)
        settings = Settings(storage_root=str(target), chunk_rows=chunk_rows, holdout_fraction=0.3,
                            validation_max_new_user_share=0.9, validation_max_new_item_share=0.9)
        for day in days:
            try:
                validate_partition(store, settings, day)
            except ValidationFailed as err:
                outcome[f"{day} error"] = str(err).replace(str(target), "<root>")
                validate_partition(store, settings, day, accept_invalid=True, accept_reason="a test accepts it")
            build_features(store, settings, day)
            outcome[day.isoformat()] = _outputs(store, day, target)
        outcome[f"{name} vocab"] = {n: vocab.load(store, n) for n in (vocab.USERS, vocab.ITEMS)}
    return outcome


def _outputs(store: LocalStore, day: date, root: Path) -> dict[str, Any]:
    features = layout.features(day)
    quarantine = f"{layout.quarantine_events(day)}/reason.json"
    summary = store.read_json(layout.validation_summary(day))
    return {
        "summary": _normal_summary(summary, root),
        "gx": _gx_result(store, summary),
        "quarantine": _normal_summary(store.read_json(quarantine), root) if store.exists(quarantine) else None,
        "stats": store.read_json(f"{features}/{layout.STATS_FILE}"),
        **{name: store.read_parquet(f"{features}/{name}")
           for name in (layout.EXAMPLES_FILE, layout.QUERY_FILE, layout.HISTORY_FILE)},
    }


def _normal_summary(summary: dict[str, Any], root: Path) -> dict[str, Any]:
    """A summary without what differs between two runs of the same data: the store's root, the time of the
    run (and the "not in the future" bound it sets), the run's page names in the Data Docs."""
    out = json.loads(json.dumps(summary).replace(str(root), "<root>"))
    out.pop("validated_at", None)
    out.pop("quarantined_at", None)
    if out.get("accepted"):
        out["accepted"].pop("at")
    for check in out.get("checks", []):
        if check.get("check") == "event_time not in the future":
            check["expected"].pop("max_value")
    if out.get("data_docs"):
        out["data_docs"]["pages"] = sorted(out["data_docs"]["pages"])
    return out


def _gx_result(store: LocalStore, summary: dict[str, Any]) -> dict[str, Any]:
    """The stored GX result of the events suite (what its Data Docs page renders), without run ids and times;
    ``runs``: how many results of the events suite the day has (one per validation run, not per chunk)."""
    page = summary["data_docs"]["pages"][EVENTS_SUITE]
    stored = f"{RESULTS_DIR}/" + page.partition(f"{SITE_DIR}/validations/")[2].removesuffix(".html") + ".json"
    result = store.read_json(stored)
    runs = list((Path(store.uri(RESULTS_DIR).removeprefix("file://")) / EVENTS_SUITE / f"dt={summary['date']}")
                .rglob("*.json"))
    return {
        "runs": len(runs),
        "success": result["success"],
        "statistics": result["statistics"],
        "results": [
            {"type": r["expectation_config"]["type"], "kwargs": _without_now(r["expectation_config"]["kwargs"]),
             "success": r["success"], "result": r["result"],
             "exception": (r.get("exception_info") or {}).get("exception_message")}
            for r in result["results"]
        ],
    }


def _text(value: Any) -> str:
    return json.dumps(value, indent=1, sort_keys=True, default=str)


def _without_now(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if not (k == "max_value" and "min_value" not in kwargs)}


@pytest.fixture(scope="module")
def runs(raw, tmp_path_factory) -> tuple[dict[str, Any], dict[str, Any]]:
    small = _steps(raw, tmp_path_factory.mktemp("small"), SMALL)
    whole = _steps(raw, tmp_path_factory.mktemp("whole"), ONE_CHUNK)
    return small, whole


def test_the_partitions_span_several_chunks_and_files(raw):
    root, retail, synthetic = raw
    store = LocalStore(root)
    for day in (*retail, *synthetic):
        sizes = [len(c) for c in ChunkReader(store, layout.raw_events(day), chunk_rows=SMALL)]
        assert len(sizes) >= 3 and max(sizes) <= SMALL, (day, sizes)
    assert len(store.data_files(layout.raw_events(synthetic[0]))) >= 2


def test_both_steps_write_the_same_outputs_in_small_chunks_and_in_one(raw, runs):
    small, whole = runs
    _, retail, synthetic = raw
    assert small.keys() == whole.keys()
    for key in small:
        if key.endswith("vocab"):
            for name in small[key]:
                pd.testing.assert_frame_equal(small[key][name], whole[key][name])
            assert len(small[key][vocab.USERS]) > 100
            continue
        if key.endswith("error"):
            assert small[key] == whole[key]
            continue
        a, b = small[key], whole[key]
        assert a["summary"] == b["summary"], key
        for mine, theirs in zip(a["gx"]["results"], b["gx"]["results"], strict=True):  # one by one: a readable diff
            assert _text(mine) == _text(theirs), key
        assert a["gx"] == b["gx"], key
        assert a["quarantine"] == b["quarantine"], key
        assert a["stats"] == b["stats"], key
        for name in (layout.EXAMPLES_FILE, layout.QUERY_FILE, layout.HISTORY_FILE):
            pd.testing.assert_frame_equal(a[name], b[name], obj=f"{key} {name}")
    # the data exercised what it should: passing days with history, a failing day, examples on every day
    assert [small[d.isoformat()]["summary"]["success"] for d in (*retail, *synthetic)] == [
        True, True, False, True, True]
    assert f"{retail[-1]} error" in small and f"{synthetic[-1]} error" not in small
    for day in (*retail, *synthetic):
        out = small[day.isoformat()]
        assert out["stats"]["examples"] > 100, day
        assert out["gx"]["runs"] == (2 if day == retail[-1] else 1), day  # the failed run and the accepting one
    assert small[synthetic[-1].isoformat()]["summary"]["margins"]["volume"]["checked"]


def test_a_failing_partition_reports_the_whole_partitions_counts_and_first_examples(raw, runs):
    small, _ = runs
    _, retail, _ = raw
    out = small[retail[-1].isoformat()]
    checks = {c["check"]: c for c in out["summary"]["checks"]}
    invalid = checks["user_id is a valid id"]
    assert not invalid["success"] and invalid["unexpected_count"] == BAD_IDS
    assert invalid["unexpected_examples"] == [f"bad\tid{n}" for n in range(5)]
    gx = {(r["type"], r["kwargs"].get("column"), json.dumps(r["kwargs"].get("regex"))): r for r in out["gx"]["results"]}
    regex = next(r for k, r in gx.items() if k[0] == "expect_column_values_to_not_match_regex" and k[1] == "user_id")
    assert len(regex["result"]["partial_unexpected_list"]) == 20
    assert regex["result"]["partial_unexpected_index_list"] == sorted(regex["result"]["partial_unexpected_index_list"])
    assert regex["result"]["partial_unexpected_index_list"][-1] > SMALL  # rows of later chunks, numbered
    assert checks["event_time inside the day"]["unexpected_count"] == 3
    assert checks["user_id not null"]["unexpected_count"] == 1
    assert [c["expectation"] for c in out["quarantine"]["failed"]] == out["summary"]["failed"]
    assert out["quarantine"]["failed_descriptions"][-1].endswith("e.g. 'bad\\tid0', 'bad\\tid1', 'bad\\tid2'")
    cleaning = out["stats"]["cleaning"]
    assert cleaning["duplicate_event_ids"] == 2 and cleaning["invalid_ids"] >= BAD_IDS


def test_day_pairs_equals_cleaning_the_whole_partition(raw):
    """The chunked cleaning against the one-frame cleaning it replaced, at several chunk sizes."""
    root, retail, synthetic = raw
    store = LocalStore(root)
    for day in (retail[-1], synthetic[0]):
        events, delivered = read_delivery(store, layout.raw_events(day), columns=("event_id", "user_id", "item_id",
                                                                                   "quantity"))
        cleaned, expected_stats = clean_events(events)
        expected = (cleaned[[schema.USER_ID, schema.ITEM_ID]].astype(str).drop_duplicates()
                    .sort_values([schema.USER_ID, schema.ITEM_ID]).reset_index(drop=True))
        for rows in (37, SMALL, ONE_CHUNK) if day == synthetic[0] else (SMALL, ONE_CHUNK):
            pairs, stats = day_pairs(store, day, delivered, chunk_rows=rows)
            pd.testing.assert_frame_equal(pairs.frame(), expected)
            assert stats == expected_stats


def test_day_pairs_refuses_a_delivery_that_did_not_pass(raw):
    root, retail, _ = raw
    with pytest.raises(FeatureError, match="changed since it was validated"):
        day_pairs(LocalStore(root), retail[0], "0" * 64, chunk_rows=SMALL)


def test_first_occurrence_is_exact_even_when_every_hash_collides(monkeypatch):
    values = pd.Series(["a", "b", None, "a", "c", None, "b", "d", "a"], dtype="string")
    expected = values.duplicated(keep="first").to_list()
    for collide in (False, True):
        if collide:  # every value hashes alike: only the comparison of the values decides
            monkeypatch.setattr(chunks, "hash_values", lambda v: np.zeros(len(v), np.uint64))
        first = FirstOccurrence()
        parts = [values.iloc[:4], values.iloc[4:7], values.iloc[7:]]
        for part in parts:
            first.add(part)
        got = [flag for part in parts for flag in first.duplicated(part).to_list()]
        assert got == expected


def test_features_name_the_delivery_that_passed_validation(raw, runs):
    small, _ = runs
    _, retail, synthetic = raw
    for day in (*retail, *synthetic):
        out = small[day.isoformat()]
        assert out["stats"]["fingerprint"] == out["summary"]["passed_fingerprint"] is not None


DAY = date(2011, 1, 4)
ROWS = [
    (f"e{n}", f"2011-01-04 {n:02d}:00:00", f"u{n % 3}", f"i{n % 4}", "purchase", 1 + n % 2, 2.5) for n in range(7)
]


def _write_two_files(store: LocalStore, first: pd.DataFrame, second: pd.DataFrame, kind: str = "parquet") -> None:
    partition = layout.raw_events(DAY)
    for n, frame in enumerate((first, second)):
        path = f"{partition}/part-{n:05d}.{kind}"
        if kind == "parquet":
            store.write_parquet(path, frame)
        else:
            store.write_bytes(path, frame.to_csv(index=False).encode())
    store.mark_success(partition)


def _no_price(frames: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    events = frames.drop(columns=[schema.PRICE])
    return events.iloc[:4], events.iloc[4:]


def _quantity_with_a_gap(frames: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The second file's quantity has a null (float64), the first's none (int64): the chunks' dtypes differ."""
    second = frames.iloc[4:].astype({schema.QUANTITY: "float64"})
    second.loc[second.index[0], schema.QUANTITY] = np.nan
    return frames.iloc[:4], second


def _csv_with_a_bad_time(frames: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    frames = frames.astype({schema.EVENT_TIME: str})
    frames.loc[5, schema.EVENT_TIME] = "yesterday"
    return frames.iloc[:3], frames.iloc[3:]


@pytest.mark.parametrize(("split", "kind"), [
    (_no_price, "parquet"), (_quantity_with_a_gap, "parquet"), (_csv_with_a_bad_time, "csv"),
])
def test_partitions_the_suite_cannot_take_chunk_by_chunk_get_the_verdict_of_one_frame(
    tmp_path, make_events, split, kind
):
    """A column missing in every chunk (the expectations raise in each), chunks whose dtypes differ (validated
    as one frame, as before), CSV files cut into chunks: the same summary and GX result as one chunk."""
    outcomes = []
    for rows in (2, ONE_CHUNK):
        root = tmp_path / str(rows)
        store = LocalStore(root)
        _write_two_files(store, *split(make_events(ROWS)), kind=kind)
        settings = Settings(storage_root=str(root), chunk_rows=rows)
        with pytest.raises(ValidationFailed):
            validate_partition(store, settings, DAY)
        summary = store.read_json(layout.validation_summary(DAY))
        outcomes.append((_normal_summary(summary, root), _gx_result(store, summary)))
    (small, small_gx), (whole, whole_gx) = outcomes
    assert small == whole
    for mine, theirs in zip(small_gx["results"], whole_gx["results"], strict=True):
        assert _text(mine) == _text(theirs)
    assert small_gx == whole_gx and small_gx["runs"] == 1
    assert small["rows"] == len(ROWS) and small["failed"]


def test_write_parquet_writes_the_bytes_of_the_whole_frame_row_group_by_row_group(tmp_path):
    """Text columns gathered from distinct values by code (Arrow text, pandas ``string``, object), integers:
    written 5 rows at a time they are the bytes ``to_parquet(row_group_size=5)`` writes of the whole frame
    (1, 2 and 5 groups, the last one short; and an empty frame); the default is pyarrow's row group."""
    store = LocalStore(tmp_path)
    rng = np.random.default_rng(1)
    ids = np.array([f"u{n}é" for n in range(50)], object)
    for rows in (0, 4, 5, 9, 23):
        codes = rng.integers(0, 50, rows).astype(np.int32)
        frame = chunks.GatheredFrame({
            "a": chunks.Gathered(pd.array(ids, dtype=pd.Series(["x"]).astype(str).dtype), codes),
            "b": chunks.Gathered(pd.array(ids, dtype="string"), codes),
            "c": np.arange(rows, dtype=np.int32),
            "d": chunks.Gathered(pd.array(["train", "holdout"], dtype=object), (codes % 2).astype(np.intp)),
            "e": chunks.Gathered(np.arange(50, dtype=np.int64) * 3, codes),
        })
        chunks.write_parquet(store, f"t{rows}.parquet", frame, group_rows=5)
        whole = frame.frame()
        assert whole["a"].tolist() == ids[codes].tolist() and whole["e"].tolist() == (codes * 3).tolist()
        expected = tmp_path / "expected.parquet"
        whole.to_parquet(expected, index=False, row_group_size=5)
        assert store.read_bytes(f"t{rows}.parquet") == expected.read_bytes(), rows
        pd.testing.assert_frame_equal(store.read_parquet(f"t{rows}.parquet"), whole)
    assert chunks.ROW_GROUP_ROWS == 1024 * 1024  # pyarrow.parquet.write_table's default, what pandas writes
    with pytest.raises(ValueError, match="different lengths"):
        chunks.GatheredFrame({"a": np.zeros(2), "b": np.zeros(3)})
