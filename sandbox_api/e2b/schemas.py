"""marshmallow schemas of E2B's control plane bodies and queries (camelCase, as the SDK sends).

Fields the fleet does not act on (``secure``, ``network``, ``mcp``...) are accepted and ignored,
as an SDK upgrade adds them; a wrong type on a field it does act on is a 400 naming the field.
"""

from __future__ import annotations

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from .sandboxes import MAX_TIMEOUT

_timeout = fields.Integer(load_default=300, validate=validate.Range(min=1, max=MAX_TIMEOUT))


def _strings(value: dict) -> None:
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValidationError("must map strings to strings")


class CreateBody(Schema):
    class Meta:
        unknown = EXCLUDE

    templateID = fields.String(required=True, validate=validate.Length(min=1, max=200))
    timeout = _timeout
    metadata = fields.Dict(load_default=dict, validate=_strings, allow_none=False)
    envVars = fields.Dict(load_default=dict, validate=_strings)
    autoPause = fields.Boolean(load_default=False)

    @validates_schema
    def _small(self, data: dict, **kwargs) -> None:
        for name in ("metadata", "envVars"):
            if len(data.get(name) or {}) > 256:
                raise ValidationError("at most 256 entries", name)


class TimeoutBody(Schema):
    class Meta:
        unknown = EXCLUDE

    timeout = fields.Integer(required=True, validate=validate.Range(min=0, max=MAX_TIMEOUT))


class ConnectBody(Schema):
    class Meta:
        unknown = EXCLUDE

    timeout = _timeout


class ListQuery(Schema):
    class Meta:
        unknown = EXCLUDE

    metadata = fields.String(load_default="")
    state = fields.String(load_default="running,paused")
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    nextToken = fields.String(load_default="")
    template = fields.String(load_default="")
    order = fields.String(load_default="asc", validate=validate.OneOf(["asc", "desc"]))

    @validates_schema
    def _states(self, data: dict, **kwargs) -> None:
        wanted = {s for s in data["state"].split(",") if s}
        if not wanted <= {"running", "paused"}:
            raise ValidationError("must be running, paused or both (comma separated)", "state")


class MetricsQuery(Schema):
    class Meta:
        unknown = EXCLUDE

    start = fields.Integer(load_default=None, validate=validate.Range(min=0),
                           metadata={"description": "unix seconds: no sample before it"})
    end = fields.Integer(load_default=None, validate=validate.Range(min=0),
                         metadata={"description": "unix seconds: no sample after it"})


class ManyMetricsQuery(Schema):
    class Meta:
        unknown = EXCLUDE

    sandbox_ids = fields.String(required=True, validate=validate.Length(min=1, max=100 * 80),
                                metadata={"description": "comma-separated sandboxIDs (at most 100)"})

    @validates_schema
    def _ids(self, data: dict, **kwargs) -> None:
        ids = [i for i in data["sandbox_ids"].split(",") if i]
        if not ids or len(ids) > 100:
            raise ValidationError("must name 1 to 100 sandboxes", "sandbox_ids")
