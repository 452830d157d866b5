"""recsys.errors: the domain exceptions the CLI and the DAG tasks report."""

from __future__ import annotations

from recsys.config import ConfigError
from recsys.datasets.online_retail import SourceError
from recsys.errors import DOMAIN_ERRORS
from recsys.evaluation import EvaluationError
from recsys.features.build import FeatureError
from recsys.registry import RegistryError
from recsys.retrain import RetrainError
from recsys.serving.deploy import DeployError
from recsys.serving.recommend import RecommendError
from recsys.storage import StorageError
from recsys.training import TrainingError
from recsys.validation.partition import ValidationFailed


def test_every_module_exception_is_a_domain_error():
    assert set(DOMAIN_ERRORS) == {
        ConfigError, SourceError, EvaluationError, FeatureError, RegistryError, DeployError, StorageError,
        TrainingError, ValidationFailed, RecommendError, RetrainError,
    }


def test_plain_programming_errors_are_not_domain_errors():
    assert not issubclass(KeyError, DOMAIN_ERRORS)
    assert not issubclass(TypeError, DOMAIN_ERRORS)
