"""Reading BOSS's HERO configuration sources: URLs, plain paths and environment variables.

BOSS (heros-boss) reads JSON documents with ``boss -u URL -e VAR``: ``file://`` URLs, ``http(s)://``
URLs with ``user:password@`` for basic auth (CouchDB documents and views), and environment
variables holding JSON. A document is one HERO, or has ``rows`` whose entries are HEROs or hold one
under ``doc`` (a CouchDB view with ``include_docs=true``). This module reads them the same way, in
the host and without heros-boss (which imports zenoh), and says what is wrong with a source or a
document in words that name the source and the ``_id``.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from boss_sidecar.errors import ConfigError

READ_TIMEOUT = 10.0
"""Seconds a URL source may take to answer: a reload never hangs on an unreachable database."""
MAX_SOURCE_BYTES = 64 * 1024 * 1024
DOCUMENT_KEYS = ("_id", "classname", "arguments", "extra_decorators", "datasource", "tags", "wrap_target")
"""The keys heros-boss reads; others (CouchDB's ``_rev``, notes) are kept and ignored, as BOSS does."""


class SourceError(ConfigError):
    """A source could not be read or is not JSON; the text names the source."""


@dataclass(frozen=True, slots=True)
class Source:
    """One place HERO documents come from: a URL or path (``url``) or an environment variable (``env``)."""

    kind: str
    target: str

    @property
    def label(self) -> str:
        """How the source is named in messages and status: a URL's password is never shown."""
        if self.kind == "env":
            return f"env {self.target}"
        return f"url {redact(self.target)}"

    def read(self, timeout: float = READ_TIMEOUT) -> Any:
        """The parsed JSON of the source, or None for an environment variable that is not set (BOSS skips it)."""
        if self.kind == "env":
            text = os.environ.get(self.target)
            if text is None:
                return None
        else:
            text = read_url(self.target, timeout)
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise SourceError(f"{self.label}: not valid JSON: {exc}") from None


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.password is None:
        return url
    host = parsed.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parsed._replace(netloc=f"{parsed.username}:***@{host}"))


def read_url(url: str, timeout: float = READ_TIMEOUT) -> str:
    """The text at ``url``: a plain path, ``file://``, or ``http(s)://`` with optional ``user:password@``."""
    label = f"url {redact(url)}"
    parsed = urllib.parse.urlsplit(url)
    try:
        if parsed.scheme in ("", "file"):
            path = Path(urllib.parse.unquote(parsed.path) if parsed.scheme else url)
            return path.read_text(encoding="utf-8")
        if parsed.scheme not in ("http", "https"):
            raise SourceError(f"{label}: unsupported scheme {parsed.scheme!r}; expected a path, file://, http(s)://")
        # Imported here only: http.client and email would cost every launcher start 10 ms.
        from urllib.request import Request, urlopen  # noqa: PLC0415

        request = Request(url)
        if parsed.username is not None:
            plain = urllib.parse.urlunsplit(parsed._replace(netloc=parsed.netloc.rpartition("@")[2]))
            request = Request(plain)
            user = urllib.parse.unquote(parsed.username)
            password = urllib.parse.unquote(parsed.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            request.add_header("Authorization", f"Basic {token}")
        with urlopen(request, timeout=timeout) as response:
            data: bytes = response.read(MAX_SOURCE_BYTES + 1)
        if len(data) > MAX_SOURCE_BYTES:
            raise SourceError(f"{label}: larger than {MAX_SOURCE_BYTES} bytes")
        return data.decode("utf-8")
    except urllib.error.HTTPError as exc:
        raise SourceError(f"{label}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise SourceError(f"{label}: unreachable: {exc.reason}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SourceError(f"{label}: cannot read: {reason}") from None


@dataclass(slots=True)
class Documents:
    """What one source holds: the valid HERO documents by ``_id``, and what was wrong with the rest."""

    source: str
    documents: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    invalid_ids: set[str] = field(default_factory=set)
    """``_id`` of invalid documents: a HERO already running under that name keeps running."""


def _entries(data: Any, where: str = "document") -> list[tuple[str, Any]]:
    """Every HERO candidate in ``data`` with where it was found, flattening ``rows`` (and their ``doc``)."""
    if not (isinstance(data, dict) and "rows" in data):
        return [(where, data)]
    rows = data["rows"]
    if not isinstance(rows, list):
        return [(f"{where}.rows", rows)]
    found: list[tuple[str, Any]] = []
    for index, row in enumerate(rows):
        place = f"rows[{index}]" if where == "document" else f"{where}.rows[{index}]"
        if isinstance(row, dict) and "doc" in row:
            found += _entries(row["doc"], f"{place}.doc")
        else:
            found += _entries(row, place)
    return found


def document_problem(document: Any) -> str | None:
    """What makes ``document`` unusable as a HERO configuration, or None when it is usable."""
    if not isinstance(document, dict):
        return f"expected a JSON object, found {type(document).__name__}"
    problems = []
    if not isinstance(document.get("_id"), str) or not document.get("_id"):
        problems.append("'_id' must be a non-empty string")
    classname = document.get("classname")
    if not isinstance(classname, str) or "." not in classname.strip("."):
        problems.append("'classname' must be a string 'package.module.Class'")
    if not isinstance(document.get("arguments", {}), dict):
        problems.append("'arguments' must be an object")
    decorators = document.get("extra_decorators", [])
    if not isinstance(decorators, list) or not all(
        isinstance(pair, list) and len(pair) == 2 and all(isinstance(part, str) for part in pair) for pair in decorators
    ):
        problems.append("'extra_decorators' must be a list of [method, 'module.decorator'] pairs")
    if "datasource" in document and not isinstance(document["datasource"], dict | None):
        problems.append("'datasource' must be an object")
    tags = document.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        problems.append("'tags' must be a list of strings")
    if not isinstance(document.get("wrap_target"), str | None):
        problems.append("'wrap_target' must be a string or null")
    return "; ".join(problems) or None


def hero_documents(data: Any, source: str) -> Documents:
    """The HERO documents in a source's parsed JSON; each problem names the source, the place and the ``_id``."""
    result = Documents(source)
    if data is None:
        return result
    for where, document in _entries(data):
        name = document.get("_id") if isinstance(document, dict) else None
        if isinstance(document, dict) and "_id" not in document and set(document) <= {"id", "key", "value"}:
            result.problems.append(f"{source}: {where}: a view row without 'doc' (add ?include_docs=true to the URL)")
            continue
        problem = document_problem(document)
        shown = f" (_id {name!r})" if isinstance(name, str) else ""
        if problem is None and name in result.documents:
            problem = "another document in this source has the same '_id'"
        if problem is not None:
            result.problems.append(f"{source}: {where}{shown}: {problem}")
            if isinstance(name, str):
                result.invalid_ids.add(name)
            continue
        assert isinstance(name, str)
        result.documents[name] = {**document, "arguments": dict(document.get("arguments", {}))}
    return result


def read_source(source: Source, timeout: float = READ_TIMEOUT) -> Documents:
    """Read and check one source; an unreadable source is one problem, with no documents."""
    try:
        data = source.read(timeout)
    except SourceError as exc:
        return Documents(source.label, problems=[str(exc)])
    return hero_documents(data, source.label)


def sources_from(urls: list[str] | tuple[str, ...], env: list[str] | tuple[str, ...]) -> tuple[Source, ...]:
    """BOSS's order: every URL, then every environment variable."""
    return tuple(Source("url", url) for url in urls) + tuple(Source("env", name) for name in env)
