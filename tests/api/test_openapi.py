"""The OpenAPI document, /docs, and /metrics' auth, with a real Redis and no workers."""

import re

import pytest
from openapi_spec_validator import validate
from prometheus_client.parser import text_string_to_metric_families

from sandbox_api import create_app, schemas
from sandbox_api.openapi import openapi_path
from sandbox_core.metrics import Recorder

TOKEN = "s3cret"


@pytest.fixture
def app(settings, store):
    return create_app(settings.replace(BEARER_TOKEN=TOKEN), extensions=[])


@pytest.fixture
def document(app):
    response = app.test_client().get("/openapi.json")  # no token: the document is public
    assert response.status_code == 200
    return response.json


def test_the_document_is_valid_openapi_3(document):
    validate(document)
    assert document["openapi"].startswith("3.")
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_every_route_of_every_mounted_app_is_in_it(app, document):
    apps = [app, *(ext for ext in app.extensions.values() if hasattr(ext, "url_map"))]
    missing = []
    for source in apps:
        for rule in source.url_map.iter_rules():
            path, _ = openapi_path(rule.rule)
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                if method.lower() not in document["paths"].get(path, {}):
                    missing.append(f"{method} {rule.rule}")
    assert not missing
    for path in ("/create", "/proxy/{identity}/{path}", "/desktop/{identity}/{path}",
                 "/health", "/fleet/status", "/metrics", "/dashboard", "/docs", "/openapi.json"):
        assert path in document["paths"], path


def test_bodies_come_from_the_schemas_that_validate_them(document):
    operation = document["paths"]["/call_tool"]["post"]
    ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    component = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert set(component["properties"]) == set(schemas.CallToolBody().fields)
    assert set(component["required"]) == {"identity", "tool_name"}
    assert component["additionalProperties"] is False  # unknown keys are refused (RAISE)
    assert operation["requestBody"]["required"] is True
    assert "requestBody" not in document["paths"]["/health"]["get"]


def test_public_routes_say_so_and_the_rest_need_the_token(document):
    assert document["security"] == [{"bearer": []}]
    for path in ("/health", "/docs", "/openapi.json", "/desktop/{identity}/{path}"):
        assert document["paths"][path]["get"]["security"] == []
    assert "security" not in document["paths"]["/metrics"]["get"]
    assert "401" in document["paths"]["/create"]["post"]["responses"]


def test_docs_page_is_served_with_local_assets_only(app):
    client = app.test_client()
    page = client.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert not re.search(r"(src|href)=\"(https?:)?//", html), "no CDN or other host"
    assets = re.findall(r"(?:src|href)=\"(/docs/assets/[^\"]+)\"", html)
    assert len(assets) >= 3
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200, asset
        assert response.data
    missing = client.get("/docs/assets/nope.js")
    assert missing.status_code == 404 and missing.json["detail"]


def test_metrics_need_the_token_unless_made_public(settings, store):
    app = create_app(settings.replace(BEARER_TOKEN=TOKEN), extensions=[])
    assert app.test_client().get("/metrics").status_code == 401
    ok = app.test_client().get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and ok.mimetype == "text/plain"
    public = create_app(settings.replace(BEARER_TOKEN=TOKEN, FLEET_METRICS_PUBLIC=True),
                        extensions=[])
    assert public.test_client().get("/metrics").status_code == 200
    assert public.test_client().post("/list_session_keys").status_code == 401


def _samples(text: str) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_worker_series_written_to_redis_appear_on_metrics(app, store):
    recorder = Recorder()
    recorder._store = store  # flushed by hand, no thread
    recorder.inc("sandbox_fleet_creates", {"host": "h1", "sandbox_type": "base", "result": "ok"})
    recorder.observe("sandbox_fleet_create_seconds", {"host": "h1", "sandbox_type": "base"}, 0.3)
    recorder.observe("sandbox_fleet_create_seconds", {"host": "h1", "sandbox_type": "base"}, 7.0)
    recorder.failure(host="h1", name="sb1", what="create", detail="image missing")
    recorder.flush()
    text = app.test_client().get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    samples = _samples(text)

    def value(name, **labels):
        return samples[(name, tuple(sorted(labels.items())))]

    labels = {"host": "h1", "sandbox_type": "base"}
    assert value("sandbox_fleet_creates_total", result="ok", **labels) == 1
    assert value("sandbox_fleet_create_seconds_bucket", le="0.25", **labels) == 0
    assert value("sandbox_fleet_create_seconds_bucket", le="0.5", **labels) == 1
    assert value("sandbox_fleet_create_seconds_bucket", le="+Inf", **labels) == 2
    assert value("sandbox_fleet_create_seconds_count", **labels) == 2
    assert value("sandbox_fleet_create_seconds_sum", **labels) == pytest.approx(7.3)
    assert samples[("sandbox_fleet_store_up", ())] == 1
    assert store.recent_failures(5)[0]["detail"] == "image missing"


def test_auth_failures_are_counted(app):
    client = app.test_client()
    client.post("/list_session_keys", headers={"Authorization": "Bearer wrong"})
    client.post("/list_session_keys")
    text = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    samples = _samples(text)
    assert samples[("sandbox_fleet_auth_failures_total", (("reason", "invalid"),))] >= 1
    assert samples[("sandbox_fleet_auth_failures_total", (("reason", "missing"),))] >= 1
