"""A tiny MCP server over HTTP for the agent's tests, in a thread of the test process.

``POST /mcp``: streamable HTTP (JSON answers, or an event stream when the url has ``?stream=1``),
with a session id that later requests must send. ``GET /sse`` + ``POST /messages``: the legacy SSE
transport. Tools: ``echo`` and ``whoami`` (which reports the X-Token header it was sent), named
with the url's ``?prefix=`` in front, so several of these servers can be told apart.
"""

from __future__ import annotations

import json
import queue
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

TOOLS = [
    {"name": "echo", "description": "Echo text back.",
     "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}},
    {"name": "whoami", "description": "The X-Token header the server was sent.",
     "inputSchema": {"type": "object", "properties": {}}},
]


def answer(message: dict, headers, prefix: str = "") -> dict | None:
    method, rid, params = message.get("method"), message.get("id"), message.get("params") or {}
    if rid is None:
        return None
    if method == "initialize":
        result = {"protocolVersion": params["protocolVersion"], "capabilities": {"tools": {}},
                  "serverInfo": {"name": "http-test-server", "version": "1"}}
    elif method == "tools/list":
        result = {"tools": [{**tool, "name": prefix + tool["name"]} for tool in TOOLS]}
    elif method == "tools/call":
        args = params.get("arguments") or {}
        name = params["name"][len(prefix):]
        text = args.get("text", "") if name == "echo" else headers.get("X-Token", "")
        result = {"content": [{"type": "text", "text": text}], "isError": False}
    else:
        return {"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": "no such method"}}
    return {"jsonrpc": "2.0", "id": rid, "result": result}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    sessions: set[str] = set()
    streams: dict[str, queue.Queue] = {}

    def log_message(self, *args) -> None:
        pass

    def _json_body(self) -> dict:
        return json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")

    def _send(self, status: int, body: bytes = b"", kind: str = "application/json", **headers) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        prefix = parse_qs(url.query).get("prefix", [""])[0]
        message = self._json_body()
        if url.path == "/mcp":
            extra = {}
            if message.get("method") == "initialize":
                session = f"s{len(self.sessions) + 1}"
                self.sessions.add(session)
                extra["Mcp_Session_Id"] = session
            elif self.headers.get("Mcp-Session-Id") not in self.sessions:
                return self._send(400, b'{"error": "no session"}')
            reply = answer(message, self.headers, prefix)
            if reply is None:
                return self._send(202, **extra)
            if parse_qs(url.query).get("stream"):
                body = f"event: message\ndata: {json.dumps(reply)}\n\n".encode()
                return self._send(200, body, "text/event-stream", **extra)
            return self._send(200, json.dumps(reply).encode(), **extra)
        if url.path == "/messages":
            stream = self.streams.get(parse_qs(url.query).get("session", [""])[0])
            if stream is None:
                return self._send(404)
            reply = answer(message, self.headers, prefix)
            if reply is not None:
                stream.put(reply)
            return self._send(202)
        self._send(404)

    def do_DELETE(self) -> None:
        self.sessions.discard(self.headers.get("Mcp-Session-Id"))
        self._send(200)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/sse":
            return self._send(404)
        prefix = parse_qs(url.query).get("prefix", [""])[0]
        session = f"sse{len(self.streams) + 1}"
        stream: queue.Queue = queue.Queue()
        self.streams[session] = stream
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        endpoint = f"/messages?session={session}&prefix={prefix}"
        self.wfile.write(f": hello\n\nevent: endpoint\ndata: {endpoint}\n\n".encode())
        self.wfile.flush()
        while True:
            reply = stream.get()
            if reply is None:
                return
            self.wfile.write(f"event: message\ndata: {json.dumps(reply)}\n\n".encode())
            self.wfile.flush()


def serve() -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"
