"""RECSYS_VALIDATION_PRESET (issue 19): each preset accepts the ordinary days of its synthetic regime that the
defaults reject, and still stops the bad deliveries of test_bad_partitions (a representative subset, pandas only)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from recsys.config import VALIDATION_PRESETS, ConfigError, Settings
from recsys.datasets import synthetic
from recsys.features import build_features
from recsys.storage import layout
from recsys.validation import validate_partition
from recsys.validation.partition import ValidationFailed
from tests.unit.test_bad_partitions import DAY, GOOD, _accepted_history, _stopped

# the bad deliveries under the default thresholds are test_bad_partitions' (on both engines)
PRESETS = sorted(set(VALIDATION_PRESETS) - {"default"})


def test_a_preset_sets_the_thresholds_left_at_their_defaults():
    plain = Settings()
    sparse = Settings.from_env({"RECSYS_VALIDATION_PRESET": "sparse"})
    assert (sparse.validation_max_new_user_share, sparse.validation_max_top_item_share) == (0.99, 0.35)
    assert sparse.validation_volume_factor == plain.validation_volume_factor
    explicit = Settings.from_env({"RECSYS_VALIDATION_PRESET": "sparse", "RECSYS_VALIDATION_MAX_TOP_ITEM_SHARE": "0.4"})
    assert explicit.validation_max_top_item_share == 0.4
    assert Settings().replace(validation_preset="sessions").validation_max_new_user_share == 1.0
    assert Settings.from_env({"RECSYS_VALIDATION_PRESET": "default"}) == plain
    with pytest.raises(ConfigError, match="RECSYS_VALIDATION_PRESET='shop': expected one of default"):
        Settings.from_env({"RECSYS_VALIDATION_PRESET": "shop"})


@pytest.fixture(params=PRESETS)
def preset(request) -> str:
    return request.param


@pytest.fixture
def under_preset(preset):
    """The validate step with the preset's settings, whatever settings the caller passes."""
    settings = Settings(validation_preset=preset)
    return lambda store, _settings, day, **kwargs: validate_partition(store, settings, day, **kwargs)


@pytest.fixture
def champion_store(store, put_version):
    from recsys import registry

    put_version(store, 1, date(2011, 1, 3), [[0.0, 0.0]] * 3, [[0.0, 0.0]] * 3)
    registry.set_champion(store, 1, "deployed", "test champion", run_id="test")
    return store


@pytest.mark.parametrize("rows", [200, 2])  # 10x and 0.1x the trailing average of 20
def test_every_preset_stops_a_volume_spike_and_drop(champion_store, publish_events, under_preset, rows):
    _accepted_history(under_preset, champion_store, publish_events, [date(2011, 1, 2), date(2011, 1, 3)], rows=20)
    publish_events(champion_store, DAY, [
        (f"x-{i}", "2011-01-04 10:00:00", f"u{i % 20}", f"i{i % 150}", "purchase", 1, 1.0) for i in range(rows)
    ])
    _stopped(under_preset, champion_store, "[volume within the trailing average]", f"observed {rows}")


def test_every_preset_stops_a_stuck_item(champion_store, publish_events, under_preset):
    publish_events(champion_store, DAY, [
        (f"x-{i}", "2011-01-04 10:00:00", f"u{i}", "85123A" if i % 2 else f"i{i}", "purchase", 1, 1.0)
        for i in range(120)
    ])
    _stopped(under_preset, champion_store, "[top item share]", "observed 0.5")


def test_every_preset_stops_a_different_redelivery(champion_store, publish_events, under_preset):
    publish_events(champion_store, DAY, GOOD)
    under_preset(champion_store, None, DAY)
    champion_store.mark_success(layout.features(DAY))
    publish_events(champion_store, DAY, GOOD[:3])
    _stopped(under_preset, champion_store, "was already processed", "later delivery differs")


def test_every_preset_stops_bad_values(champion_store, publish_events, under_preset):
    publish_events(champion_store, DAY, [
        *GOOD,
        ("581001-0", "2011-01-02 13:00:00", "12583", "22633", "click", 0, -4.5),  # a repeated id, too
    ])
    _stopped(under_preset, champion_store, "[event types]", "[event_time inside the day]", "[quantity range]",
             "[price range]", "[duplicate event ids]")


def test_presets_but_sessions_stop_a_switch_of_the_user_id_format(champion_store, publish_events, put_vocab,
                                                                  preset, under_preset):
    put_vocab(champion_store, "users", ["17850", "13047", "12583"], first_seen="2011-01-03")
    put_vocab(champion_store, "items", ["85123A", "71053", "22633", "84406B"], first_seen="2011-01-03")
    publish_events(champion_store, DAY, [(e, t, f"h{hash(u) & 0xffff:x}", i, k, q, p) for e, t, u, i, k, q, p in GOOD])
    if preset == "sessions":  # every user is new by design: the share cannot tell a new id format (README)
        assert under_preset(champion_store, None, DAY).success
    else:
        _stopped(under_preset, champion_store, "[share of new users]", "observed 1.0")


def _two_days(store, regime: str, **sizes) -> date:
    """Days 1 and 2 of ``regime``; day 1 validated and its features built (the vocabulary exists); day 2's date."""
    start = date(2026, 1, 1)
    synthetic.publish_days(store, synthetic.SyntheticConfig.for_regime(regime, **sizes), start, days=2)
    settings = Settings(storage_root=str(store.root))
    validate_partition(store, settings, start)
    build_features(store, settings, start)
    return start + timedelta(days=1)


@pytest.mark.parametrize(("regime", "sizes", "failing"), [
    ("sessions", {"events": 2000}, "share of new users"),  # 1.0: every user is new
    ("sparse", {}, "share of new users"),  # 0.974: a small shop's second day
])
def test_ordinary_regime_days_pass_their_preset_only(store, regime, sizes, failing):
    day = _two_days(store, regime, **sizes)
    with pytest.raises(ValidationFailed, match=failing):
        validate_partition(store, Settings(storage_root=str(store.root)), day)
    report = validate_partition(store, Settings(storage_root=str(store.root), validation_preset=regime), day,
                                force=True)
    assert report.success, report.failed


@pytest.mark.parametrize(("regime", "observed"), [("sparse", 0.26), ("seasonal", 0.232)])
def test_a_small_catalogs_top_item_passes_its_preset_only(store, publish_events, regime, observed):
    # as on sparse day 26 (104 events) and seasonal's first Monday: the top item of a small or favoured catalog
    rows = 250
    top = round(observed * rows)
    publish_events(store, DAY, [
        (f"x-{i}", "2011-01-04 10:00:00", f"u{i}", "85123A" if i < top else f"i{i % 40}", "purchase", 1, 1.0)
        for i in range(rows)
    ])
    with pytest.raises(ValidationFailed, match="top item share"):
        validate_partition(store, Settings(), DAY)
    assert validate_partition(store, Settings(validation_preset=regime), DAY, force=True).success
