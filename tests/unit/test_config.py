"""recsys.config: Settings.from_env parsing and validation."""

from __future__ import annotations

import dataclasses

import pytest

from recsys.config import ConfigError, Settings


def test_empty_env_gives_the_documented_defaults():
    s = Settings.from_env({})
    assert s == Settings()
    assert (s.storage_backend, s.k, s.embedding_dim, s.epochs, s.batch_size) == ("local", 100, 64, 3, 1024)
    assert (s.min_recall, s.max_regression, s.min_eval_users) == (0.02, 0.0, 10)
    assert s.holdout_fraction == 0.25


def test_explicit_env_values_are_parsed_to_the_field_types():
    s = Settings.from_env(
        {
            "RECSYS_K": "5",
            "RECSYS_EMBEDDING_DIM": " 8 ",
            "RECSYS_LEARNING_RATE": "0.5",
            "RECSYS_HOLDOUT_FRACTION": "0.1",
            "RECSYS_MIN_RECALL": "0.3",
            "RECSYS_MAX_REGRESSION": "0.01",
            "RECSYS_STORAGE_ROOT": "/data/store",
            "RECSYS_REPLAY_EXAMPLES": "0",
        }
    )
    assert s.k == 5 and isinstance(s.k, int)
    assert s.embedding_dim == 8
    assert s.learning_rate == 0.5 and isinstance(s.learning_rate, float)
    assert s.holdout_fraction == 0.1
    assert s.min_recall == 0.3
    assert s.max_regression == 0.01
    assert s.storage_root == "/data/store"
    assert s.replay_examples == 0
    # untouched fields keep their defaults
    assert s.epochs == 3


def test_unrelated_variables_are_ignored():
    assert Settings.from_env({"K": "0", "RECSYS_NOT_A_FIELD": "x", "recsys_k": "0"}) == Settings()


def test_from_env_without_argument_reads_os_environ(monkeypatch):
    monkeypatch.setenv("RECSYS_K", "7")
    monkeypatch.setenv("RECSYS_MIN_RECALL", "none")
    s = Settings.from_env()
    assert s.k == 7
    assert s.min_recall is None


@pytest.mark.parametrize("text", ["none", "None", "NULL", "", "  none "])
@pytest.mark.parametrize("field", ["min_recall", "max_regression"])
def test_none_like_text_parses_to_none_for_optional_thresholds(field, text):
    s = Settings.from_env({f"RECSYS_{field.upper()}": text})
    assert getattr(s, field) is None


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("RECSYS_K", "ten"),
        ("RECSYS_K", "none"),  # only the optional thresholds accept none
        ("RECSYS_K", ""),
        ("RECSYS_EPOCHS", "1.5"),
        ("RECSYS_LEARNING_RATE", "fast"),
        ("RECSYS_MIN_RECALL", "high"),
        ("RECSYS_HOLDOUT_FRACTION", "none"),
    ],
)
def test_unparsable_values_name_the_variable(var, raw):
    with pytest.raises(ConfigError) as info:
        Settings.from_env({var: raw})
    assert var in str(info.value)
    assert "is not a valid" in str(info.value)


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("RECSYS_STORAGE_BACKEND", "s3"),
        ("RECSYS_K", "0"),
        ("RECSYS_K", "-3"),
        ("RECSYS_EMBEDDING_DIM", "0"),
        ("RECSYS_EPOCHS", "0"),
        ("RECSYS_BATCH_SIZE", "0"),
        ("RECSYS_MIN_EVAL_USERS", "0"),
        ("RECSYS_REPLAY_EXAMPLES", "-1"),
        ("RECSYS_HOLDOUT_FRACTION", "0"),
        ("RECSYS_HOLDOUT_FRACTION", "1"),
        ("RECSYS_LEARNING_RATE", "0"),
        ("RECSYS_LEARNING_RATE", "-0.1"),
        ("RECSYS_MIN_RECALL", "1.5"),
        ("RECSYS_MIN_RECALL", "-0.01"),
        ("RECSYS_MAX_REGRESSION", "-0.1"),
        ("RECSYS_SENSOR_POKE_SECONDS", "0"),
        ("RECSYS_WEBHDFS_URL", "namenode:9870"),
        ("RECSYS_WEBHDFS_URL", "ftp://namenode:9870"),
        ("RECSYS_WEBHDFS_URL", "http://nn1:9870;nn2:9870"),
        ("RECSYS_WEBHDFS_USER", "hdfs user"),
        ("RECSYS_WEBHDFS_CONN_ID", "  "),
    ],
)
def test_out_of_range_values_name_the_variable(var, raw):
    with pytest.raises(ConfigError, match=var):
        Settings.from_env({var: raw})


def test_webhdfs_needs_an_absolute_root():
    with pytest.raises(ConfigError, match="RECSYS_STORAGE_ROOT='data/recsys'"):
        Settings.from_env({"RECSYS_STORAGE_BACKEND": "webhdfs", "RECSYS_STORAGE_ROOT": "data/recsys"})
    # a relative root is fine for the local store
    assert Settings.from_env({"RECSYS_STORAGE_ROOT": "data/recsys"}).storage_root == "data/recsys"


def test_webhdfs_settings_are_parsed():
    s = Settings.from_env(
        {
            "RECSYS_STORAGE_BACKEND": "webhdfs",
            "RECSYS_STORAGE_ROOT": "/data/recsys",
            "RECSYS_WEBHDFS_URL": "http://nn1:9870;https://nn2:9871",
            "RECSYS_WEBHDFS_USER": "recsys",
            "RECSYS_SENSOR_POKE_SECONDS": "5",
        }
    )
    assert (s.webhdfs_url, s.webhdfs_user, s.sensor_poke_seconds) == ("http://nn1:9870;https://nn2:9871", "recsys", 5)
    assert Settings.from_env({"RECSYS_WEBHDFS_URL": "none", "RECSYS_WEBHDFS_USER": ""}).webhdfs_url is None
    assert Settings.from_env({"RECSYS_WEBHDFS_USER": ""}).webhdfs_user is None


def test_range_boundaries_are_accepted():
    s = Settings.from_env(
        {"RECSYS_MIN_RECALL": "0", "RECSYS_MAX_REGRESSION": "0", "RECSYS_REPLAY_EXAMPLES": "0", "RECSYS_K": "1"}
    )
    assert (s.min_recall, s.max_regression, s.replay_examples, s.k) == (0.0, 0.0, 0, 1)
    assert Settings.from_env({"RECSYS_MIN_RECALL": "1"}).min_recall == 1.0
    assert Settings.from_env({"RECSYS_STORAGE_BACKEND": "webhdfs"}).storage_backend == "webhdfs"


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_replace_returns_a_validated_copy():
    base = Settings()
    changed = base.replace(k=20, min_recall=None)
    assert (changed.k, changed.min_recall) == (20, None)
    assert (base.k, base.min_recall) == (100, 0.02)
    with pytest.raises(ConfigError, match="RECSYS_EPOCHS"):
        base.replace(epochs=0)


def test_settings_are_frozen():
    s = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.k = 5  # type: ignore[misc]
    assert s.k == 100


@pytest.mark.parametrize("var", ["RECSYS_MAX_REGRESSION", "RECSYS_LEARNING_RATE"])
def test_nan_is_rejected(var):
    with pytest.raises(ConfigError, match=var):
        Settings.from_env({var: "nan"})


def test_boolean_settings_parse_words_and_reject_others():
    assert Settings.from_env({"RECSYS_LOGQ_CORRECTION": "true"}).logq_correction is True
    assert Settings.from_env({"RECSYS_LOGQ_CORRECTION": "0"}).logq_correction is False
    assert Settings.from_env({}).logq_correction is True  # measured: bench/replay_quality
    with pytest.raises(ConfigError, match="RECSYS_LOGQ_CORRECTION"):
        Settings.from_env({"RECSYS_LOGQ_CORRECTION": "maybe"})


SECRETS = {
    "RECSYS_NOTIFY_BACKEND": "smtp", "RECSYS_NOTIFY_SMTP_HOST": "smtp.example.com", "RECSYS_NOTIFY_SMTP_TO": "a@b.c",
    "RECSYS_NOTIFY_SMTP_USER": "alerts", "RECSYS_NOTIFY_SMTP_PASSWORD": "pw-8c1f0e",
    "RECSYS_NOTIFY_WEBHOOK_URL": "https://hooks.example.com/services/T0/B0/tok-5d2a9b",
}


def test_settings_know_their_secrets_and_never_show_them():
    s = Settings.from_env(SECRETS)
    assert Settings.secret_fields() == {"notify_smtp_password", "notify_webhook_url"}
    assert (s.notify_smtp_password, s.notify_webhook_url) == ("pw-8c1f0e", SECRETS["RECSYS_NOTIFY_WEBHOOK_URL"])
    public = s.public()
    assert set(public) == {f.name for f in dataclasses.fields(Settings)} - Settings.secret_fields()
    assert public["notify_smtp_user"] == "alerts" and public["k"] == 100
    for shown in (repr(public), repr(s), str(s)):
        assert "pw-8c1f0e" not in shown and "tok-5d2a9b" not in shown


def test_the_airflow_glue_variables_are_settings_fields():
    s = Settings.from_env({
        "RECSYS_TRAIN_IN_CONTAINER": " Kubernetes ", "RECSYS_TRAINER_IMAGE": "registry.example/trainer:7",
        "RECSYS_DOCKER_URL": "tcp://docker:2375", "RECSYS_DOCKER_NETWORK": "shop", "RECSYS_TRAIN_MEMORY": "12Gi",
        "RECSYS_TRAIN_CPU": "4", "RECSYS_K8S_NAMESPACE": "ml", "RECSYS_TRAINING_QUEUE": "training",
        "RECSYS_WEBHDFS_CONN_ID": "hdfs_prod", "RECSYS_SENSOR_POKE_SECONDS": "15",
    })
    assert (s.train_in_container, s.trainer_image, s.docker_url, s.docker_network) == (
        "kubernetes", "registry.example/trainer:7", "tcp://docker:2375", "shop")
    assert (s.train_memory, s.train_cpu, s.k8s_namespace, s.training_queue) == ("12Gi", "4", "ml", "training")
    assert (s.webhdfs_conn_id, s.sensor_poke_seconds) == ("hdfs_prod", 15)
    d = Settings()
    assert (d.train_in_container, d.trainer_image, d.train_memory, d.training_queue) == (
        "", "recsys-trainer:latest", None, None)


def test_an_unknown_container_mode_is_refused_with_the_choices():
    with pytest.raises(ConfigError, match=r"RECSYS_TRAIN_IN_CONTAINER='podman': expected .*'docker' or 'kubernetes'"):
        Settings.from_env({"RECSYS_TRAIN_IN_CONTAINER": "podman"})
