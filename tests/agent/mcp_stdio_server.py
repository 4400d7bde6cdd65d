"""A tiny MCP server on stdio for the agent's tests: tools echo, add, sleep, fail; two pages of tools/list."""

import json
import sys
import time

TOOLS = [
    {
        "name": "echo",
        "description": "Echo text back.",
        "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
    },
    {
        "name": "add",
        "description": "Add two numbers.",
        "inputSchema": {
            "type": "object",
            "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
            "required": ["a", "b"],
        },
    },
    {
        "name": "sleep",
        "description": "Sleep.",
        "inputSchema": {"type": "object", "properties": {"seconds": {"type": "number"}}},
    },
    {"name": "fail", "description": "Answer an error result.", "inputSchema": {"type": "object"}},
]


def send(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def text(value, is_error=False):
    return {"content": [{"type": "text", "text": value}], "isError": is_error}


for line in sys.stdin:
    request = json.loads(line)
    method, rid, params = request.get("method"), request.get("id"), request.get("params") or {}
    if rid is None:
        continue  # notifications
    if method == "initialize":
        result = {
            "protocolVersion": params["protocolVersion"],
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "test-server", "version": "1"},
        }
    elif method == "tools/list":  # two pages, to exercise nextCursor
        result = (
            {"tools": TOOLS[:2], "nextCursor": "page2"} if not params.get("cursor") else {"tools": TOOLS[2:]}
        )
    elif method == "tools/call":
        name, args = params["name"], params.get("arguments") or {}
        if name == "echo":
            result = text(args["text"])
            result["structuredContent"] = {"echoed": args["text"]}
        elif name == "add":
            result = text(str(args["a"] + args["b"]))
        elif name == "sleep":
            time.sleep(args.get("seconds", 10))
            result = text("slept")
        elif name == "fail":
            result = text("it failed", is_error=True)
        else:
            send({"jsonrpc": "2.0", "id": rid, "error": {"code": -32602, "message": f"Unknown tool: {name}"}})
            continue
    else:
        send({"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": "Method not found"}})
        continue
    send({"jsonrpc": "2.0", "id": rid, "result": result})
