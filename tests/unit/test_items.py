"""recsys.features.items: hashed title words and price bands per item row."""

from __future__ import annotations

import pandas as pd

from recsys.features import items, vocab


def test_title_words_are_stable_lowercase_hashes_cut_at_the_word_limit():
    words = items.title_words("RED Heart, red lantern!")
    assert words == items.title_words("red heart red lantern")
    assert words[0] == words[2]  # the same word, the same bucket
    assert all(0 < w < items.WORD_BUCKETS for w in words)
    assert len(items.title_words(" ".join(f"w{n}" for n in range(20)))) == items.TITLE_WORDS
    assert items.title_words(None) == items.title_words(float("nan")) == items.title_words("") == []


def test_price_bands_are_log_spaced_and_bounded():
    assert items.price_band(None) == items.price_band(-1.0) == items.price_band(float("nan")) == 0
    assert items.price_band(0.0) == 1
    assert items.price_band(1.0) == 3  # 1 + floor(4 * ln 2) = 1 + 2
    assert items.price_band(10.0) < items.price_band(100.0) <= items.PRICE_BANDS - 1
    assert items.price_band(1e12) == items.PRICE_BANDS - 1


def test_feature_arrays_fill_the_rows_of_catalogued_items_only():
    table, _ = vocab.grow(vocab.empty(), pd.Series(["a", "b", "c"]), pd.Timestamp("2011-01-04").date())
    catalog = pd.DataFrame({"item_id": ["a", "c", "zz"], "title": ["red heart", "blue star", "x"],
                            "price": [1.0, 10.0, 2.0]})
    arrays = items.feature_arrays(catalog, table, rows=5)
    words, price = arrays["item_words"], arrays["item_price"]
    assert words.shape == (5, items.TITLE_WORDS) and price.shape == (5,)
    assert words[1, :2].tolist() == items.title_words("red heart") and price[1] == items.price_band(1.0)
    assert not words[2].any() and price[2] == 0  # b is not in the catalog
    assert words[3, :2].tolist() == items.title_words("blue star")
    assert not words[0].any() and not words[4].any()  # OOV row, unused row
