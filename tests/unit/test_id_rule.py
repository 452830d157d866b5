"""One id rule (recsys.schema) shared by validation, the service and its OpenAPI schema (issue 18 #8).

Every tricky id below gets the same verdict from ``schema.valid_id``, from the Great Expectations suites
(``expectations/raw_events.json`` and ``catalog.json`` with the parameters validation passes), from the
service (422, or 404 where the id cannot even be put in a URL path) and from the schema's ``pattern``, run
by Python, pydantic (the service) and JavaScript with and without the 'u' flag (Swagger UI, JSON Schema
validators). Characters beyond the BMP are refused by all of them (see recsys.schema).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import unicodedata
from datetime import date
from urllib.parse import quote

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from recsys import schema
from recsys.config import Settings
from recsys.serving.service import create_app

VALID = ["17135", "85123A", "ÄÖ-12", "a b", ".a", "a.", ". a", "C581001-0", "x" * 64, "100%", "a?b#c", "日本", "éé"]
INVALID = [
    "", " 17135", "17135 ", " ", "a\u2028b", "a\u2029b", "a\u202eb", "a\x85b", "a\x9fb", "a\x00b", "a\tb", "a\nb",
    "17135\n", "a\u200bb", "\ufeff17135", "a\u00a0b", "a\u3000b", "a\u00adb", "a\U000e0041b", "a\ue000b", "item/1",
    ".", "..", "...", ". ", "x" * 65,
    # beyond the BMP (refused as a whole, so every regex engine reads the rule alike)
    "a\U0001F600b", "\U00020000", "a\U000110bdb", "a\U000F0000b", "17135\U000E0020",
]


@pytest.mark.parametrize("text", VALID + INVALID)
def test_valid_id_and_the_search_form_agree(text):
    expected = text in VALID
    assert schema.valid_id(text) is expected
    by_search = 1 <= len(text) <= schema.MAX_ID_LENGTH and re.search(schema.INVALID_ID_REGEX, text) is None
    assert by_search is expected


def test_the_forbidden_class_is_exactly_the_unicode_categories():
    """In the BMP, Cc, Cf, Co, Cs, Zl, Zp and Zs but the space are forbidden, plus '/'; everything else is
    allowed (code points this Python's Unicode database does not know yet, category Cn, may go either
    way). Every character beyond the BMP is forbidden."""
    forbidden = {"Cc", "Cf", "Co", "Cs", "Zl", "Zp", "Zs"}
    wrong = []
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        category = unicodedata.category(char)
        if category == "Cn" and code <= 0xFFFF:
            continue
        expected = code <= 0xFFFF and not ((category in forbidden and char != " ") or char == "/")
        if schema.valid_id(f"a{char}b") is not expected:
            wrong.append(f"U+{code:04X} {category}")
    assert wrong == []


def _gx_unexpected(suite_name: str, column: str, ids: list[str], params: dict) -> set[str]:
    """The ids the suite's id expectations on ``column`` reject, run by Great Expectations itself."""
    import great_expectations as gx

    from recsys.validation.suites import load_suite

    suite = load_suite(suite_name)
    chosen = [e for e in suite["expectations"] if e["kwargs"].get("column") == column
              and e["type"] in ("expect_column_values_to_not_match_regex", "expect_column_value_lengths_to_be_between")]
    assert len(chosen) == 2
    context = gx.get_context(mode="ephemeral")
    batch = context.data_sources.add_pandas("p").add_dataframe_asset("a").add_batch_definition_whole_dataframe("w")
    gx_suite = context.suites.add(gx.ExpectationSuite(name="ids", expectations=chosen))
    definition = context.validation_definitions.add(gx.ValidationDefinition(name="ids", data=batch, suite=gx_suite))
    frame = pd.DataFrame({column: pd.array(ids, dtype="string")})
    result = definition.run(batch_parameters={"dataframe": frame}, expectation_parameters=params,
                            result_format={"result_format": "COMPLETE"})
    rejected: set[str] = set()
    for r in result.results:
        assert r.exception_info is None or not r.exception_info.get("raised_exception"), r.exception_info
        rejected |= {ids[i] for i in r.result.get("unexpected_index_list") or []}
    return rejected


def test_validation_rejects_exactly_the_invalid_ids():
    from recsys.validation.suites import catalog_parameters

    ids = VALID + INVALID
    assert _gx_unexpected("catalog", "item_id", ids, catalog_parameters(Settings())) == set(INVALID)
    # the event suite's parameters come from event_parameters (wiring checked end to end below)
    params = {"invalid_id": schema.INVALID_ID_REGEX, "max_id_length": Settings().validation_max_id_length}
    for column in ("user_id", "item_id", "event_id"):
        assert _gx_unexpected("raw_events", column, ids, params) == set(INVALID), column


def test_the_event_suite_gets_the_rule_from_validation(store, publish_events):
    """End to end: a customer id with a leading space stops the partition (it would be another customer)."""
    from recsys.validation import ValidationFailed, validate_partition

    day = date(2011, 1, 4)
    publish_events(store, day, [("e-1", "2011-01-04 08:00:00", "17135", "85123A", "purchase", 1, 2.55),
                                ("e-2", "2011-01-04 09:00:00", " 17135", "85123A", "purchase", 1, 2.55)])
    with pytest.raises(ValidationFailed, match=r"\[user_id is a valid id\]"):
        validate_partition(store, Settings(), day)


def test_an_accepted_partition_puts_no_invalid_id_into_the_vocabulary(store, publish_events):
    """On-call may accept a partition that failed on its ids; the features step then drops those rows and
    counts them in the day's cleaning statistics (features stats.json), never silently."""
    from recsys.features import build_features, vocab
    from recsys.features.build import load_stats
    from recsys.validation import validate_partition

    day = date(2011, 1, 4)
    publish_events(store, day, [("e-1", "2011-01-04 08:00:00", "17135", "85123A", "purchase", 1, 2.55),
                                ("e-2", "2011-01-04 09:00:00", " 17135", "85123A", "purchase", 1, 2.55),
                                ("e-3", "2011-01-04 09:30:00", "17135", "a\u202eb", "purchase", 1, 2.55),
                                ("e-4", "2011-01-04 10:00:00", "a\u202eb", "22423", "purchase", 1, 2.55)])
    report = validate_partition(store, Settings(), day, accept_invalid=True, accept_reason="test: ids upstream")
    assert not report.success and report.accepted is not None
    settings = Settings(min_user_count=1, min_item_count=1)
    build_features(store, settings, day)
    assert load_stats(store, day)["cleaning"] == {"rows_in": 4, "rows_out": 1, "duplicate_event_ids": 0,
                                                  "invalid_ids": 3, "non_positive_quantity": 0}
    assert sorted(vocab.load(store, vocab.USERS)[vocab.ID].dropna().astype(str)) == ["17135"]
    assert "a\u202eb" not in set(vocab.load(store, vocab.ITEMS)[vocab.ID].dropna().astype(str))


@pytest.fixture
def service(store):
    return TestClient(create_app(store, watch=False))  # no champion: a valid id gets 503, an invalid one 4xx


@pytest.mark.parametrize("text", VALID + INVALID)
def test_the_service_serves_exactly_the_valid_ids(service, text):
    for url in (f"/recommendations/{quote(text, safe='')}", f"/items/{quote(text, safe='')}/similar"):
        response = service.get(url)
        if text in VALID:
            assert response.status_code == 503, (url, response.text)  # past input checks: no model yet
        else:
            assert response.status_code in (404, 422), (url, response.text)
            if response.status_code == 422:
                assert "not a valid id" in response.json()["detail"] or "at most" in response.json()["detail"]


def test_the_openapi_schema_publishes_the_rule(service):
    doc = service.get("/openapi.json").json()
    for path, name in (("/recommendations/{user_id}", "user_id"), ("/items/{item_id}/similar", "item_id")):
        param = {p["name"]: p for p in doc["paths"][path]["get"]["parameters"]}[name]
        assert param["schema"]["pattern"] == schema.ID_PATTERN
        assert (param["schema"]["minLength"], param["schema"]["maxLength"]) == (1, schema.MAX_ID_LENGTH)
        pattern = re.compile(param["schema"]["pattern"])
        for text in VALID + INVALID:
            accepted = pattern.fullmatch(text) is not None and 1 <= len(text) <= schema.MAX_ID_LENGTH
            assert accepted is (text in VALID), text


_NODE_VERDICTS = """
const [pattern, maxLength, texts] = JSON.parse(require("fs").readFileSync(0, "utf8"));
const verdicts = {};
for (const flags of ["", "u"]) {
  const re = new RegExp(pattern, flags);  // Swagger UI: new RegExp(pattern); JSON Schema validators: 'u'
  const length = flags ? (t) => [...t].length : (t) => t.length;
  verdicts[flags || "none"] = texts.map((t) => re.test(t) && length(t) >= 1 && length(t) <= maxLength);
}
process.stdout.write(JSON.stringify(verdicts));
"""


def _javascript_verdicts(pattern: str, texts: list[str]) -> dict[str, list[bool]]:
    """Whether JavaScript's RegExp, without and with the 'u' flag, accepts each text by ``pattern`` and
    the schema's length bounds (Node.js; JSON carries lone surrogates as \\uXXXX escapes)."""
    node = shutil.which("node")
    assert node, "Node.js is needed to check the published pattern in JavaScript"
    payload = json.dumps([pattern, schema.MAX_ID_LENGTH, texts])
    done = subprocess.run([node, "-e", _NODE_VERDICTS], input=payload, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_javascript_reads_the_published_pattern_as_python_does(service):
    """The OpenAPI ``pattern`` gives valid_id's verdict in JavaScript with and without the 'u' flag: for
    the tricky ids, every BMP character (surrogates included) and samples beyond the BMP. (Python's
    \\U0001xxxx escapes read as a literal 'U' without 'u', so ids with 'U' or digits were refused, and
    were a SyntaxError with 'u'.)"""
    doc = service.get("/openapi.json").json()
    params = {p["name"]: p for p in doc["paths"]["/recommendations/{user_id}"]["get"]["parameters"]}
    pattern = params["user_id"]["schema"]["pattern"]
    texts = VALID + INVALID + [f"a{chr(code)}b" for code in range(0x10000)]
    texts += [f"a{chr(code)}b" for code in range(0x10000, sys.maxunicode + 1, 997)]
    expected = [schema.valid_id(t) for t in texts]
    for flags, verdicts in _javascript_verdicts(pattern, texts).items():
        wrong = [t for t, ok, want in zip(texts, verdicts, expected, strict=True) if ok is not want]
        assert wrong == [], (flags, [f"{t!r}" for t in wrong[:20]])
