"""Cleaning, training examples and vocabularies, built from one validated raw partition."""

from recsys.features.build import FeatureError, FeatureStats, build_features, load_examples

__all__ = ["FeatureError", "FeatureStats", "build_features", "load_examples"]
