"""Request bodies of the RPC routes (agentscope-runtime's method signatures), as marshmallow schemas.

Unknown keys are refused with a 400 that names them; upstream answered 500.
"""

from __future__ import annotations

from marshmallow import RAISE, Schema, fields, validate


class _Body(Schema):
    class Meta:
        unknown = RAISE


_identity = fields.String(required=True, validate=validate.Length(min=1, max=512))
_optional_dict = fields.Dict(keys=fields.String(), allow_none=True, load_default=None)
_optional_str = fields.String(allow_none=True, load_default=None)


class IdentityBody(_Body):
    identity = _identity


class CreateFromPoolBody(_Body):
    sandbox_type = _optional_str
    meta = _optional_dict


class CreateBody(_Body):
    sandbox_type = _optional_str
    mount_dir = _optional_str
    storage_path = _optional_str
    environment = fields.Dict(keys=fields.String(), values=fields.Raw(allow_none=True),
                              allow_none=True, load_default=None)
    meta = _optional_dict
    #: sandbox-fleet's own: {"memory": "512m", "cpu": 0.5}, within the server's caps.
    resource_limits = fields.Dict(keys=fields.String(), values=fields.Raw(allow_none=True),
                                  allow_none=True, load_default=None)


class GetInfoBody(IdentityBody):
    _redirect_depth = fields.Integer(load_default=0, data_key="_redirect_depth")


class ListToolsBody(IdentityBody):
    tool_type = _optional_str


class CallToolBody(IdentityBody):
    tool_name = fields.String(required=True, validate=validate.Length(min=1, max=256))
    arguments = _optional_dict


class AddMcpServersBody(IdentityBody):
    server_configs = fields.Dict(keys=fields.String(), required=True)
    overwrite = fields.Boolean(load_default=False)


class SessionBody(_Body):
    session_ctx_id = fields.String(required=True, validate=validate.Length(min=1, max=512))


class EmptyBody(_Body):
    pass


def positional_fields(schema: Schema) -> list[str]:
    """The order in which an ``{"args": [...]}`` body fills a route's parameters."""
    return [name for name in schema.fields if not name.startswith("_")]
