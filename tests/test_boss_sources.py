"""Reading BOSS sources as BOSS does: paths, file:// and http(s) URLs with basic auth, env vars, rows/doc."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from boss_sidecar.boss_sources import Source, hero_documents, read_source, sources_from
from boss_sidecar.testing import free_port
from peers.boss_support import METER, PASSWORD, THERMISTOR, CouchServer, view


@pytest.fixture
def couch() -> Iterator[CouchServer]:
    server = CouchServer()
    yield server
    server.close()


def test_a_plain_path_and_a_file_url_hold_one_document_each(tmp_path: Path) -> None:
    """A file with one HERO document is read from its path and from its file:// URL alike."""
    path = tmp_path / "meter.json"
    path.write_text(json.dumps(METER))
    for target in (str(path), path.as_uri()):
        documents = read_source(Source("url", target))
        assert documents.problems == [] and documents.documents == {"meter": METER}


def test_rows_hold_documents_directly_or_under_doc() -> None:
    """A CouchDB view's rows carry the document under 'doc'; plain rows are documents themselves."""
    data = {"rows": [{"doc": METER}, THERMISTOR]}
    documents = hero_documents(data, "url test")
    assert sorted(documents.documents) == ["meter", "thermistor"] and documents.problems == []


def test_an_environment_variable_is_a_source_and_an_unset_one_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    """BOSS reads -e variables that are set and silently skips those that are not."""
    monkeypatch.setenv("BOSS_TEST_HEROES", json.dumps({"rows": [METER]}))
    monkeypatch.delenv("BOSS_UNSET", raising=False)
    assert list(read_source(Source("env", "BOSS_TEST_HEROES")).documents) == ["meter"]
    unset = read_source(Source("env", "BOSS_UNSET"))
    assert unset.documents == {} and unset.problems == []
    assert [source.label for source in sources_from(["a.json"], ["BOSS"])] == ["url a.json", "env BOSS"]


def test_invalid_documents_are_named_by_source_place_and_id() -> None:
    """Each invalid document is one problem naming the source, where it sits and its _id; valid ones pass."""
    data = {
        "rows": [
            {"doc": METER},
            {"doc": {"_id": "broken", "arguments": {}}},
            {"doc": {"_id": "meter", "classname": "x.Y"}},
            {"id": "raw", "key": "raw", "value": {}},
            {"doc": {"_id": "odd", "classname": "a.B", "arguments": [], "tags": "x"}},
        ]
    }
    documents = hero_documents(data, "url test")
    assert list(documents.documents) == ["meter"]
    assert documents.problems == [
        "url test: rows[1].doc (_id 'broken'): 'classname' must be a string 'package.module.Class'",
        "url test: rows[2].doc (_id 'meter'): another document in this source has the same '_id'",
        "url test: rows[3]: a view row without 'doc' (add ?include_docs=true to the URL)",
        "url test: rows[4].doc (_id 'odd'): 'arguments' must be an object; 'tags' must be a list of strings",
    ]
    assert documents.invalid_ids == {"broken", "meter", "odd"}


def test_an_http_source_sends_basic_auth_from_the_url(couch: CouchServer) -> None:
    """user:password@ in an http URL becomes a basic auth header, as heros-boss sends it."""
    couch.routes["/lab/_design/heros/_view/all?include_docs=true"] = view(METER, THERMISTOR)
    documents = read_source(Source("url", couch.url("/lab/_design/heros/_view/all?include_docs=true")))
    assert documents.problems == [] and sorted(documents.documents) == ["meter", "thermistor"]


def test_a_refused_or_unreachable_source_is_one_problem_without_the_password(couch: CouchServer) -> None:
    """A wrong password, a missing document, a closed port, a missing file and bad JSON each give one
    problem naming the source; the password is never shown."""
    couch.routes["/lab/meter"] = METER
    wrong = read_source(Source("url", couch.url("/lab/meter", password="wrong")))
    missing = read_source(Source("url", couch.url("/lab/nothing")))
    closed = read_source(Source("url", f"http://{'lab'}:{PASSWORD}@127.0.0.1:{free_port()}/lab/meter"))
    absent = read_source(Source("url", "/nonexistent/heroes.json"))
    assert wrong.problems[0].endswith("/lab/meter: HTTP 401 Unauthorized")
    assert missing.problems[0].endswith("/lab/nothing: HTTP 404 Not Found")
    assert ": unreachable: " in closed.problems[0]
    assert absent.problems == ["url /nonexistent/heroes.json: cannot read: No such file or directory"]
    for problem in wrong.problems + missing.problems + closed.problems:
        assert "lab:***@127.0.0.1" in problem and PASSWORD not in problem and "wrong" not in problem


def test_a_source_that_is_not_json_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    assert read_source(Source("url", str(path))).problems[0].startswith(f"url {path}: not valid JSON: ")
