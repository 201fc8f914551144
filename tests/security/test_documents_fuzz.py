"""Generated junk on every document path never gives a 5xx or a traceback (issue 11, item 4).

Bytes, YAML and JSON shapes, and samples with one value swapped for junk (which reach the
rules on the well-shaped rest) go to ``POST /orders/validate``, ``POST /orders`` and
``PUT /orders/{id}`` as YAML and as JSON, and through ``provisioner validate``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from fuzzing import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from orderstore import JSON, OPEN_LIMITS, ORDER, YAML, DocStore, make_store, sample
from typer.testing import CliRunner

from provisioner.api.app import create_app
from provisioner.cli.app import app as cli

ENDPOINTS = (
    ("POST", "/api/v1/orders/validate", "viewer"),
    ("POST", "/api/v1/orders", "noc"),
    ("PUT", f"/api/v1/orders/{ORDER}", "noc"),
)
FUZZ = settings(
    max_examples=examples(40, 1000),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DocStore]:
    s = make_store(tmp_path_factory.mktemp("fuzz") / "home")
    yield s
    s.inventory.db.dispose()


@pytest.fixture(scope="module")
def client(store: DocStore) -> TestClient:
    return TestClient(
        create_app(store.settings, store.inventory, OPEN_LIMITS), raise_server_exceptions=False
    )


class _Crashes(logging.Handler):
    """Every log record with a traceback, or at ERROR and above, while it is installed."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.levelno >= logging.ERROR:
            self.records.append(f"{record.name}: {record.getMessage()[:200]}")


@pytest.fixture
def crashes() -> Iterator[_Crashes]:
    handler = _Crashes()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


# ---------------------------------------------------------------------- strategies

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
    | st.sampled_from(["+390212345601", "00:80:f0:00:00:01", "milano", "office_maxi", "iad"])
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner,
                                                                  max_size=5),
    max_leaves=25,
)  # fmt: skip
_KEYS = ["order", "customer", "plan", "lines", "options", "numbers", "sites", "extensions",
         "devices", "name", "vat", "mac", "port", "handsets", "gnr", "<<"]  # fmt: skip
_documents = st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=8), _values, max_size=8)


def _paths(data: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _paths(v, (*path, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _paths(v, (*path, i))


_SAMPLE = sample()
_SAMPLE_PATHS = [p for p in _paths(_SAMPLE) if p]


@st.composite
def _mutated_samples(draw: st.DrawFn) -> dict[str, Any]:
    """The sample order with a few values swapped for junk, or removed."""
    doc = json.loads(json.dumps(_SAMPLE))
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(_SAMPLE_PATHS))
        node: Any = doc
        try:
            for part in path[:-1]:
                node = node[part]
            if draw(st.booleans()):
                node[path[-1]] = draw(_values)
            elif isinstance(node, dict):
                node.pop(path[-1], None)
            else:
                node.pop(path[-1])
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change removed or replaced the way there
    return doc


def _yaml_text(data: Any) -> str:
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


_bodies = st.one_of(
    st.binary(max_size=400).map(lambda b: (b, YAML)),
    st.binary(max_size=400).map(lambda b: (b, JSON)),
    st.text(max_size=400).map(lambda t: (t.encode("utf-8", "surrogatepass"), YAML)),
    _documents.map(lambda d: (_yaml_text(d).encode(), YAML)),
    _documents.map(lambda d: (json.dumps(d).encode(), JSON)),
    _mutated_samples().map(lambda d: (_yaml_text(d).encode(), YAML)),
    _mutated_samples().map(lambda d: (json.dumps(d).encode(), JSON)),
)


# ---------------------------------------------------------------------- the API


@FUZZ
@given(body=_bodies)
def test_no_document_body_gives_a_5xx_or_a_traceback(
    client: TestClient, store: DocStore, crashes: _Crashes, body: tuple[bytes, str]
) -> None:
    raw, ctype = body
    for method, path, role in ENDPOINTS:
        r = client.request(method, path, content=raw, headers=store.headers(role, ctype))
        assert r.status_code < 500, (path, r.status_code, r.text[:300])
        if r.status_code >= 400:
            assert r.headers["content-type"] == "application/problem+json"
            assert "Traceback" not in r.text
    assert not crashes.records


# ---------------------------------------------------------------------- provisioner validate


@FUZZ
@given(body=_bodies)
def test_provisioner_validate_never_prints_a_traceback(
    tmp_path: Path, crashes: _Crashes, body: tuple[bytes, str]
) -> None:
    raw, _ = body
    f = tmp_path / "order.yaml"
    f.write_bytes(raw)
    result = CliRunner().invoke(cli, ["validate", str(f)])
    assert result.exit_code in (0, 1), result.output[-500:]
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    for line in result.output.splitlines()[:-1]:  # every problem names the file
        assert line.startswith(f"{f}"), line
    assert not crashes.records
