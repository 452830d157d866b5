"""The domain exceptions of every module, gathered for callers that report them (CLI, DAG tasks)."""

from __future__ import annotations

from recsys.config import ConfigError
from recsys.datasets.online_retail import SourceError
from recsys.evaluation import EvaluationError
from recsys.features.build import FeatureError
from recsys.registry import RegistryError
from recsys.retrain import RetrainError
from recsys.serving.deploy import DeployError
from recsys.serving.recommend import RecommendError
from recsys.storage import StorageError
from recsys.training import TrainingError
from recsys.validation.partition import ValidationFailed

DOMAIN_ERRORS: tuple[type[Exception], ...] = (
    ConfigError, SourceError, EvaluationError, FeatureError, RegistryError, DeployError, StorageError,
    TrainingError, ValidationFailed, RecommendError, RetrainError,
)
