"""MCP ``CallToolResult`` dumps, shaped exactly as upstream's ``model_dump()``."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any



def text_item(text: str, description: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "text", "text": text, "annotations": None}
    if description is not None:
        item["description"] = description
    return item


def call_tool_result(content: list[dict[str, Any]], is_error: bool) -> dict[str, Any]:
    return {"meta": None, "content": content, "isError": is_error}


def split_output(stdout: str, stderr: str, returncode: str | None = None) -> dict[str, Any]:
    """stdout item, a stderr item only when there is stderr, then returncode if given.

    ``isError`` is ``bool(stderr)`` as upstream, not the exit code.
    """
    content = [text_item(stdout, "stdout")]
    if stderr:
        content.append(text_item(stderr, "stderr"))
    if returncode is not None:
        content.append(text_item(returncode, "returncode"))
    return call_tool_result(content, bool(stderr))
