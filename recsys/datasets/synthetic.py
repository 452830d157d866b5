"""A synthetic event generator with the structure of real e-commerce logs, for scale tests and benchmarks.

Online Retail has 4,373 customers and a few hundred purchase lines a day; the scale work needs days of
0.1M to 10M events with the shape a production clickstream has:

* **Item popularity is Zipf-like.** Item ``r`` (by popularity rank) is drawn with weight ``r ** -zipf_s``
  (default 1.0: the top 1% of 100k items get about 60% of the draws), and the popularity ranks are
  shuffled over the item ids, so ``i0000001`` is not the most popular item.
* **Items belong to categories** (Zipf-sized), and titles are built from per-category words
  (``"RED VINTAGE CERAMIC MUG"``), so the catalog looks like Online Retail's descriptions.
* **User activity is skewed.** Each user has a log-normal activity weight (``activity_sigma``, default 1.2:
  the most active 10% of users own about 40% of the sessions); sessions pick users by that weight.
* **Sessions.** Events come in sessions (geometric length, mean ``session_mean``) of one user. A session
  browses one focus category (share ``session_focus``, popular items of that category first) and
  otherwise the whole catalog; consecutive events are seconds to minutes apart (exponential gaps);
  session starts follow a day curve (quiet at night, busiest in the evening, UTC).
* **A funnel.** Most events are views; some add to cart; fewer are purchases (``event_mix``). Views and
  carts have quantity 1; purchases 1-12 (geometric); the price is the item's catalog price.

**Regimes** (``regime``; :data:`REGIMES`) turn the shop into one of the kinds the pipeline must not lose to
popularity on (issue 19); ``default`` is the clickstream above, unchanged:

* ``sparse``: a small shop of thin days: about 90 events and 20 buying customers a day (600 users, 500
  items, short purchase-heavy sessions), the day's volume drawn around ``events`` (a gamma factor of mean 1,
  a quieter weekend), so some days have a third of the usual events or fewer.
* ``no_repeat``: customers never buy an item twice: a purchase of a (user, item) pair bought before (on an
  earlier day of the same :func:`publish_days` call, or earlier that day) becomes a view.
* ``sessions``: anonymous one-session users: every session has its own user id (``u<yyyymmdd>-<n>``), which
  never comes back.
* ``seasonal``: a strong weekly cycle (volume from 0.5x on Tuesdays to 1.8x on Saturdays, and each weekday
  favours its own categories) and promotion days (:func:`promotion_items`; about one day in five) on which
  three items take 30% of the day's events between them.

Ids match ``bench/synthetic_store.py`` (``u<n>`` users, ``i<7 digits>`` items). Generation is
deterministic per ``(seed, day)``: the same seed gives the same universe of users and items on every
day, and each day its own events. A day is produced in chunks of whole sessions, each written as its
own ``part-NNNNN.parquet`` file, so memory is bounded by the chunk size, not by the day's size.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys import schema
from recsys.config import ConfigError
from recsys.progress import progress
from recsys.storage import PartitionStore, layout

log = logging.getLogger(__name__)

DATA_FILE = "part-{:05d}.parquet"
STATS_FILE = "_synthetic.json"  # how the partition was generated (a metadata file: starts with "_")
DEFAULT_CHUNK_EVENTS = 1_000_000
COUNTRIES = (
    "United Kingdom",
    "Germany",
    "France",
    "Netherlands",
    "Spain",
    "Ireland",
    "Italy",
    "Poland",
    "Sweden",
    "Belgium",
    "Portugal",
    "Norway",
)
# words of the titles: colour + adjective + material + the category's noun (Online Retail's style)
_COLOURS = (
    "RED",
    "WHITE",
    "BLUE",
    "PINK",
    "GREEN",
    "BLACK",
    "IVORY",
    "GOLD",
    "SILVER",
    "CREAM",
    "YELLOW",
    "PURPLE",
    "ORANGE",
    "GREY",
    "NATURAL",
    "SKY BLUE",
)
_ADJECTIVES = (
    "VINTAGE",
    "HANGING",
    "SMALL",
    "LARGE",
    "RETRO",
    "FLORAL",
    "SPOTTY",
    "CHRISTMAS",
    "HEART",
    "PAISLEY",
    "REGENCY",
    "JUMBO",
    "MINI",
    "ANTIQUE",
    "RUSTIC",
    "FOLKART",
    "STRIPED",
    "GLITTER",
)
_MATERIALS = (
    "CERAMIC",
    "GLASS",
    "WOODEN",
    "METAL",
    "ENAMEL",
    "PAPER",
    "FELT",
    "COTTON",
    "ZINC",
    "WICKER",
    "LACE",
    "VELVET",
    "PORCELAIN",
    "TIN",
)
_NOUNS = (
    "MUG",
    "T-LIGHT HOLDER",
    "LANTERN",
    "CUSHION COVER",
    "CAKE STAND",
    "BAG",
    "CLOCK",
    "PHOTO FRAME",
    "NOTEBOOK",
    "DOORMAT",
    "TEA SET",
    "JAR",
    "BUNTING",
    "BOWL",
    "TRAY",
    "GIFT WRAP",
    "PURSE",
    "WATER BOTTLE",
    "CANDLE",
    "SIGN",
    "PLATE",
    "LUNCH BOX",
    "PARASOL",
    "SPOON SET",
    "COAT HANGER",
)


class SyntheticError(ConfigError):
    """The generator was asked for something it cannot produce (bad sizes, shares or dates)."""


DEFAULT_REGIME = "default"
# regime -> the SyntheticConfig fields it changes (a field the caller gives explicitly wins; see for_regime)
REGIMES: dict[str, dict[str, Any]] = {
    DEFAULT_REGIME: {},
    "sparse": {"events": 90, "users": 600, "items": 500, "session_mean": 3.5, "event_mix": (0.4, 0.2, 0.4)},
    "no_repeat": {},
    "sessions": {},
    "seasonal": {},
}
# sparse: the day's volume is events x a gamma factor of mean 1 (shape SPARSE_SHAPE) x the weekday's factor
SPARSE_SHAPE = 4.0
SPARSE_WEEKDAY = (1.1, 1.1, 1.1, 1.1, 1.1, 0.75, 0.75)  # Monday .. Sunday (mean 1)
# seasonal: the weekday's volume factor (Monday .. Sunday, mean 1), the share of a promotion day's events on its
# promoted items, how many items a promotion has, and the chance that a day is a promotion day
SEASONAL_WEEKDAY = (0.7, 0.5, 0.7, 0.9, 1.1, 1.8, 1.3)
PROMOTION_SHARE = 0.3
PROMOTION_ITEMS = 3
PROMOTION_CHANCE = 0.2
SEASONAL_CATEGORY_BOOST = 4.0  # a weekday's favoured categories (category % 7 == weekday) weigh this much more


@dataclass(frozen=True)
class SyntheticConfig:
    """What one generated day looks like. ``users`` / ``items`` of 0 pick sizes from ``events``."""

    events: int = 100_000  # events per day
    users: int = 0  # size of the user universe (0: events // 8, at least 1,000)
    items: int = 0  # size of the item universe (0: events // 50, between 500 and 1,000,000)
    categories: int = 0  # item categories (0: about sqrt(items) / 2, at least 5)
    zipf_s: float = 1.0  # exponent of item popularity by rank
    activity_sigma: float = 1.2  # sigma of the log-normal user activity weights
    session_mean: float = 8.0  # mean events per session (geometric)
    session_focus: float = 0.7  # share of a session's events drawn from its focus category
    gap_mean_seconds: float = 45.0  # mean time between two events of a session
    event_mix: tuple[float, float, float] = (0.88, 0.08, 0.04)  # view, add_to_cart, purchase
    delisted_share: float = 0.03  # catalog items marked unavailable
    seed: int = 7
    chunk_events: int = DEFAULT_CHUNK_EVENTS  # events per part file (whole sessions; about this many)
    regime: str = DEFAULT_REGIME  # one of REGIMES (build with for_regime to get its sizes)
    extra: dict[str, Any] = field(default_factory=dict, compare=False)  # free-form notes for the stats file

    def __post_init__(self) -> None:
        for broken, problem in self._problems():
            if broken:
                raise SyntheticError(problem)

    def _problems(self) -> list[tuple[bool, str]]:
        """(is it broken, what to say) for every rule of the fields, checked in this order."""
        mix = self.event_mix
        return [
            (self.events <= 0, f"events must be positive, got {self.events}"),
            (self.users < 0 or self.items < 0 or self.categories < 0,
             "users, items and categories must be >= 0 (0 picks a size from events)"),
            (not self.zipf_s > 0, f"zipf_s must be positive, got {self.zipf_s}"),
            (self.activity_sigma < 0, f"activity_sigma must be >= 0, got {self.activity_sigma}"),
            (not self.session_mean >= 1, f"session_mean must be >= 1 event, got {self.session_mean}"),
            (not 0.0 <= self.session_focus <= 1.0, f"session_focus must be in [0, 1], got {self.session_focus}"),
            (not self.gap_mean_seconds > 0, f"gap_mean_seconds must be positive, got {self.gap_mean_seconds}"),
            (len(mix) != 3 or min(mix) < 0 or not math.isclose(sum(mix), 1.0),
             f"event_mix must be three shares (view, add_to_cart, purchase) summing to 1, got {mix}"),
            (not 0.0 <= self.delisted_share < 1.0, f"delisted_share must be in [0, 1), got {self.delisted_share}"),
            (self.chunk_events <= 0, f"chunk_events must be positive, got {self.chunk_events}"),
            (self.regime not in REGIMES, f"regime must be one of {', '.join(REGIMES)}, got {self.regime!r}"),
        ]

    @classmethod
    def for_regime(cls, regime: str = DEFAULT_REGIME, **given: Any) -> SyntheticConfig:
        """The config of ``regime``: its :data:`REGIMES` sizes and shares, then the fields in ``given``
        (None: not given)."""
        if regime not in REGIMES:
            raise SyntheticError(f"regime must be one of {', '.join(REGIMES)}, got {regime!r}")
        fields_ = {**REGIMES[regime], **{k: v for k, v in given.items() if v is not None}}
        return cls(regime=regime, **fields_)

    @property
    def n_users(self) -> int:
        return self.users or max(1_000, self.events // 8)

    @property
    def n_items(self) -> int:
        return self.items or min(1_000_000, max(500, self.events // 50))

    @property
    def n_categories(self) -> int:
        return self.categories or max(5, round(math.sqrt(self.n_items) / 2))

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["event_mix"] = list(self.event_mix)
        if self.regime == DEFAULT_REGIME:  # the default's stats file stays as it was before regimes
            del out["regime"]
        out.update(n_users=self.n_users, n_items=self.n_items, n_categories=self.n_categories)
        return out


def user_ids(n: int) -> list[str]:
    """``u1`` .. ``u<n>`` (as ``bench/synthetic_store.py``)."""
    return [f"u{i}" for i in range(1, n + 1)]


def item_ids(n: int) -> list[str]:
    """``i0000001`` .. (seven digits, as ``bench/synthetic_store.py``)."""
    return [f"i{i:07d}" for i in range(1, n + 1)]


def _ids(prefix: str, numbers: np.ndarray, width: int = 0) -> pa.Array:
    """``prefix`` + the numbers (zero-padded to ``width``) as an arrow string array, without Python loops."""
    text = pc.cast(pa.array(numbers, pa.int64()), pa.string())
    if width:
        text = pc.utf8_lpad(text, width=width, padding="0")
    return pc.binary_join_element_wise(pa.scalar(prefix), text, "")


class Universe:
    """The users and items of a seed: popularity, categories, prices, titles, activity, home countries."""

    def __init__(self, config: SyntheticConfig) -> None:
        self.config = config
        rng = np.random.default_rng([config.seed, 0])
        n_items, n_cats = config.n_items, config.n_categories
        # categories of Zipf-ish sizes; each item's category; the popularity rank of each item (0 = top)
        cat_weights = 1.0 / np.arange(1, n_cats + 1) ** 0.8
        self.item_category = rng.choice(n_cats, size=n_items, p=cat_weights / cat_weights.sum())
        rank = rng.permutation(n_items)
        self.item_weight = 1.0 / (rank + 1.0) ** config.zipf_s
        self.item_price = np.round(rng.lognormal(1.0, 0.8, size=n_items), 2).clip(0.1, 5_000.0)
        self.item_available = rng.random(n_items) >= config.delisted_share
        # sampling tables: the global CDF, and per category its items (by index) and their CDF
        self._global_cdf = np.cumsum(self.item_weight / self.item_weight.sum())
        order = np.argsort(self.item_category, kind="stable")
        bounds = np.searchsorted(self.item_category[order], np.arange(n_cats + 1))
        self._cat_items = [order[bounds[c] : bounds[c + 1]] for c in range(n_cats)]
        self._cat_cdf = [
            np.cumsum(self.item_weight[ix] / self.item_weight[ix].sum()) if len(ix) else ix for ix in self._cat_items
        ]
        # a session's focus category is drawn by the category's total popularity
        cat_pop = np.bincount(self.item_category, weights=self.item_weight, minlength=n_cats)
        self._cat_focus_cdf = np.cumsum(cat_pop / cat_pop.sum())
        rng_u = np.random.default_rng([config.seed, 1])
        activity = rng_u.lognormal(0.0, config.activity_sigma, size=config.n_users)
        self._user_cdf = np.cumsum(activity / activity.sum())
        self.user_activity = activity
        country_w = 1.0 / np.arange(1, len(COUNTRIES) + 1) ** 2.0
        self.user_country = rng_u.choice(len(COUNTRIES), size=config.n_users, p=country_w / country_w.sum())
        # no_repeat: day -> the sorted (user * items + item) keys of the pairs bought that day (days generated so far)
        self.purchased: dict[date, np.ndarray] = {}

    @staticmethod
    def _draw(cdf: np.ndarray, uniform: np.ndarray) -> np.ndarray:
        return np.minimum(np.searchsorted(cdf, uniform, side="right"), len(cdf) - 1)

    def draw_users(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self._draw(self._user_cdf, rng.random(n))

    def draw_items(self, rng: np.random.Generator, focus: np.ndarray) -> np.ndarray:
        """One item index per event: from its session's focus category (if it has one) or the whole catalog."""
        out = self._draw(self._global_cdf, rng.random(len(focus)))
        focused = np.flatnonzero(focus >= 0)
        if len(focused):
            cats = focus[focused]
            for cat in np.unique(cats):
                members = focused[cats == cat]
                items = self._cat_items[cat]
                if len(items):
                    out[members] = items[self._draw(self._cat_cdf[cat], rng.random(len(members)))]
        return out

    def draw_focus(self, rng: np.random.Generator, n: int, weekday: int | None = None) -> np.ndarray:
        """Focus categories of ``n`` sessions, by popularity; on a ``weekday`` (seasonal) its categories favoured."""
        if weekday is None:
            return self._draw(self._cat_focus_cdf, rng.random(n))
        return self._draw(self._weekday_focus_cdf[weekday], rng.random(n))

    @cached_property
    def _weekday_focus_cdf(self) -> list[np.ndarray]:
        n_cats = self.config.n_categories
        cat_pop = np.bincount(self.item_category, weights=self.item_weight, minlength=n_cats)
        out = []
        for weekday in range(7):
            weights = cat_pop * np.where(np.arange(n_cats) % 7 == weekday, SEASONAL_CATEGORY_BOOST, 1.0)
            out.append(np.cumsum(weights / weights.sum()))
        return out

    def bought_before(self, day: date) -> np.ndarray:
        """no_repeat: the sorted pair keys bought on the days before ``day`` that this universe generated."""
        earlier = [keys for d, keys in self.purchased.items() if d < day]
        return np.unique(np.concatenate(earlier)) if earlier else np.zeros(0, dtype=np.int64)

    @cached_property
    def titles(self) -> list[str]:
        """One title per item: colour, adjective, material and the category's noun (titles may repeat)."""
        rng = np.random.default_rng([self.config.seed, 2])
        n = self.config.n_items
        colour = rng.integers(len(_COLOURS), size=n)
        adjective = rng.integers(len(_ADJECTIVES), size=n)
        material = rng.integers(len(_MATERIALS), size=n)
        noun = self.item_category % len(_NOUNS)
        variant = self.item_category // len(_NOUNS)  # more categories than nouns: "MUG II", "MUG III"
        return [
            f"{_COLOURS[c]} {_ADJECTIVES[a]} {_MATERIALS[m]} {_NOUNS[k]}" + (f" {_roman(v + 1)}" if v else "")
            for c, a, m, k, v in zip(colour, adjective, material, noun, variant, strict=True)
        ]

    def catalog(self) -> pd.DataFrame:
        """The catalog snapshot in the canonical schema (every item of the universe)."""
        frame = pd.DataFrame(
            {
                schema.ITEM_ID: item_ids(self.config.n_items),
                schema.TITLE: self.titles,
                schema.CATEGORY: [f"c{c:04d}" for c in self.item_category],
                schema.PRICE: self.item_price,
                schema.AVAILABLE: self.item_available,
            }
        )
        return frame.astype(schema.CATALOG_DTYPES)


def _roman(n: int) -> str:
    numerals = ((10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I"))
    out = ""
    for value, letters in numerals:
        while n >= value:
            out, n = out + letters, n - value
    return out


# the day curve of session starts: share of sessions starting in each UTC hour (night low, evening peak)
_HOURLY = np.array(
    [2, 1.2, 0.8, 0.6, 0.6, 0.8, 1.5, 3, 4.5, 5, 5.2, 5.5, 6, 5.8, 5.5, 5.3, 5.5, 6, 6.5, 7.5, 8, 7, 5, 3.2]
)
_HOURLY_CDF = np.cumsum(_HOURLY / _HOURLY.sum())


# the arrow schema with pandas metadata of the canonical dtypes: pandas reads the files back as the landing
# simulator's (StringDtype ids). Without it pandas 3 reads arrow strings as its "str" dtype, which the
# raw_events suite's "is text" type checks (str, StringDtype) do not accept.
_EVENT_SCHEMA = pa.Schema.from_pandas(
    pd.DataFrame({c: pd.Series(dtype=t) for c, t in schema.EVENT_DTYPES.items()}), preserve_index=False
)


def day_events(config: SyntheticConfig, day: date) -> int:
    """The number of events of ``day``: ``config.events``, or for sparse and seasonal that times the day's factor."""
    if config.regime == "sparse":
        rng = np.random.default_rng([config.seed, 4, day.toordinal()])
        factor = rng.gamma(SPARSE_SHAPE, 1.0 / SPARSE_SHAPE) * SPARSE_WEEKDAY[day.weekday()]
        return max(1, round(config.events * factor))
    if config.regime == "seasonal":
        boost = 1.0 + PROMOTION_SHARE if len(promotion_items(config, day)) else 1.0
        return max(1, round(config.events * SEASONAL_WEEKDAY[day.weekday()] * boost))
    return config.events


def promotion_items(config: SyntheticConfig, day: date) -> np.ndarray:
    """seasonal: the item indices promoted on ``day`` (0-based, ``i<index + 1>``); empty on other days and regimes.

    About :data:`PROMOTION_CHANCE` of the days; their :data:`PROMOTION_ITEMS` items are drawn uniformly from
    the catalog (mostly items of the long tail, which spike on the day), and take :data:`PROMOTION_SHARE` of its
    events between them.
    """
    if config.regime != "seasonal":
        return np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng([config.seed, 5, day.toordinal()])
    if rng.random() >= PROMOTION_CHANCE:
        return np.zeros(0, dtype=np.int64)
    return rng.choice(config.n_items, size=min(PROMOTION_ITEMS, config.n_items), replace=False).astype(np.int64)


def iter_chunks(universe: Universe, day: date) -> Iterator[pa.Table]:
    """The day's events as arrow tables of whole sessions (about ``chunk_events`` rows each), in order.

    Together the chunks hold exactly :func:`day_events` rows (``config.events`` but for sparse and seasonal);
    event ids are unique within the day (``<yyyymmdd>-<10 digits>``) and session ids unique within the day.
    """
    config = universe.config
    regime = config.regime
    total = day_events(config, day)
    promoted = promotion_items(config, day)
    weekday = day.weekday() if regime == "seasonal" else None
    bought = universe.bought_before(day) if regime == "no_repeat" else None
    bought_today: list[np.ndarray] = []
    rng = np.random.default_rng([config.seed, 3, day.toordinal()])
    day_start_ns = int(datetime.combine(day, datetime.min.time(), tzinfo=UTC).timestamp()) * 10**9
    last_ns = 86_400 * 10**9 - 1_000  # sessions running past midnight end at the day's last microsecond
    p = 1.0 / config.session_mean
    stamp = day.strftime("%Y%m%d")
    done = 0
    session_base = 0
    while done < total:
        want = min(config.chunk_events, total - done)
        # sessions until the chunk is full; the last one is cut so the day has exactly `events` rows
        lengths = rng.geometric(p, size=max(1, int(want * p * 1.2) + 16))
        ends = np.cumsum(lengths)
        cut = int(np.searchsorted(ends, want))
        while cut >= len(lengths):  # rare: too few sessions drawn
            more = rng.geometric(p, size=len(lengths))
            lengths = np.concatenate([lengths, more])
            ends = np.cumsum(lengths)
            cut = int(np.searchsorted(ends, want))
        lengths = lengths[: cut + 1].copy()
        lengths[-1] -= int(ends[cut] - want)
        sessions = len(lengths)
        session_of = np.repeat(np.arange(sessions), lengths)
        position = np.arange(want) - np.repeat(np.cumsum(lengths) - lengths, lengths)

        users = universe.draw_users(rng, sessions)
        focus = universe.draw_focus(rng, sessions, weekday)
        focused_event = rng.random(want) < config.session_focus
        items = universe.draw_items(rng, np.where(focused_event, focus[session_of], -1))
        if len(promoted):  # seasonal promotion day: a share of the events go to the promoted items
            on_promotion = rng.random(want) < PROMOTION_SHARE
            items[on_promotion] = promoted[rng.integers(len(promoted), size=int(on_promotion.sum()))]

        hour = np.searchsorted(_HOURLY_CDF, rng.random(sessions), side="right").clip(0, 23)
        start = (hour * 3600 + rng.random(sessions) * 3600) * 1e9  # ns after midnight
        gaps = rng.exponential(config.gap_mean_seconds, size=want) * 1e9
        gaps[position == 0] = 0.0
        offset = np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[np.cumsum(lengths) - lengths], lengths)
        times = day_start_ns + np.minimum((start[session_of] + offset).astype("int64"), last_ns)

        kind = np.searchsorted(np.cumsum(config.event_mix), rng.random(want), side="right").clip(0, 2)
        if bought is not None:  # no_repeat: a pair bought before (earlier days, or earlier today) is only viewed
            key = users[session_of].astype(np.int64) * config.n_items + items
            bought_now = np.concatenate([bought, *bought_today]) if bought_today else bought
            buys = np.flatnonzero(kind == 2)
            _, first = np.unique(key[buys], return_index=True)
            repeat = np.ones(len(buys), dtype=bool)
            repeat[first] = False
            repeat |= np.isin(key[buys], bought_now)
            kind[buys[repeat]] = 0
            bought_today.append(np.unique(key[kind == 2]))
        quantity = np.where(kind == 2, rng.geometric(0.35, size=want).clip(1, 12), 1).astype("int64")
        event_type = pa.DictionaryArray.from_arrays(pa.array(kind, pa.int8()), pa.array(schema.EVENT_TYPES))

        table = pa.table(
            {
                schema.EVENT_ID: _ids(f"{stamp}-", np.arange(done, done + want), width=10),
                schema.EVENT_TIME: pa.array(times, pa.timestamp("ns", tz="UTC")),
                schema.USER_ID: (_ids(f"u{stamp}-", session_base + session_of) if regime == "sessions"
                                 else _ids("u", users[session_of] + 1)),
                schema.ITEM_ID: _ids("i", items + 1, width=7),
                schema.EVENT_TYPE: event_type.cast(pa.string()),
                schema.QUANTITY: pa.array(quantity, pa.int64()),
                schema.PRICE: pa.array(universe.item_price[items], pa.float64()),
                schema.SESSION_ID: _ids(f"s{stamp}-", session_base + session_of),
                schema.COUNTRY: pa.array(
                    np.asarray(COUNTRIES, dtype=object)[universe.user_country[users]][session_of], pa.string()
                ),
            }
        )
        yield table.cast(_EVENT_SCHEMA)
        done += want
        session_base += sessions
    if bought is not None:
        universe.purchased[day] = np.unique(np.concatenate(bought_today)) if bought_today else bought[:0]


def generate_day(config: SyntheticConfig, day: date, universe: Universe | None = None) -> pd.DataFrame:
    """One whole day of events as a DataFrame in the canonical dtypes (for tests and small sizes).

    no_repeat remembers the purchases of the days ``universe`` generated before (a new universe: none)."""
    universe = universe or Universe(config)
    frame = pa.concat_tables(list(iter_chunks(universe, day))).to_pandas()
    return frame.astype(schema.EVENT_DTYPES)


@dataclass(frozen=True)
class Generated:
    """One published synthetic partition."""

    day: date
    events: int
    files: int
    catalog_items: int
    users: int
    items: int
    already_present: bool

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "day": self.day.isoformat()}


def publish_day(
    store: PartitionStore, config: SyntheticConfig, day: date, universe: Universe | None = None, overwrite: bool = False
) -> Generated:
    """Publish ``raw/catalog`` and ``raw/events`` for ``day`` the way the upstream job does.

    The catalog first, then the events in part files of whole sessions, the ``_SUCCESS`` marker last.
    A day whose marker already exists is left unchanged unless ``overwrite``.
    """
    universe = universe or Universe(config)
    events_dir = layout.raw_events(day)
    catalog_dir = layout.raw_catalog(day)
    if store.is_complete(events_dir) and not overwrite:
        log.info("%s already published; left unchanged", day)
        return Generated(day, -1, -1, -1, config.n_users, config.n_items, already_present=True)
    if not store.is_complete(catalog_dir) or overwrite:
        store.write_parquet(f"{catalog_dir}/part-00000.parquet", universe.catalog())
        store.mark_success(catalog_dir)
    # written locally, then published as one directory (marker included) with an atomic rename: a reader
    # never sees part of the day, and files of an earlier unfinished attempt are replaced, not mixed in
    files = 0
    with tempfile.TemporaryDirectory(prefix="recsys-synthetic-") as tmp:
        local = Path(tmp) / "events"
        local.mkdir()
        for index, table in enumerate(iter_chunks(universe, day)):
            pq.write_table(table, local / DATA_FILE.format(index))
            files += 1
        stats = {"generator": "recsys.datasets.synthetic", "date": day.isoformat(), **config.as_dict()}
        (local / STATS_FILE).write_text(json.dumps(stats, indent=2, sort_keys=True, default=str) + "\n")
        (local / layout.SUCCESS).write_bytes(b"")
        store.publish_dir(local, events_dir)
    events = day_events(config, day)
    log.info("published synthetic %s: %d events in %d files", day, events, files)
    return Generated(day, events, files, config.n_items, config.n_users, config.n_items, False)


def publish_days(
    store: PartitionStore, config: SyntheticConfig, start: date, days: int = 1, overwrite: bool = False
) -> list[Generated]:
    """``days`` consecutive days from ``start`` over one universe (same users and items every day)."""
    if days <= 0:
        raise SyntheticError(f"days must be positive, got {days}")
    universe = Universe(config)
    return [publish_day(store, config, start + timedelta(days=n), universe, overwrite)
            for n in progress(range(days), "generating", "day")]
