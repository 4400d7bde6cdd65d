"""``computer``: a stdio MCP server that drives the sandbox's X desktop (DISPLAY, default :1).

One tool, ``computer {action, coordinate?, text?}``, with the actions of upstream's
computer-use-mcp (the SDK's ``GuiSandbox.computer_use``): key, type, mouse_move, left_click,
left_click_drag, right_click, middle_click, double_click, get_screenshot, get_cursor_position.
Input goes through xdotool (XTEST); screenshots are read with python3-xlib and written as PNG with
zlib, so nothing heavier (ImageMagick) is needed. Newline-delimited JSON-RPC 2.0 on stdin/stdout.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import subprocess
import sys
import zlib

PROTOCOL_VERSION = "2025-06-18"
ACTIONS = ["key", "type", "mouse_move", "left_click", "left_click_drag", "right_click",
           "middle_click", "double_click", "get_screenshot", "get_cursor_position"]
DESCRIPTION = "\n".join([
    "Use a mouse and keyboard to interact with a computer, and take screenshots.",
    "* This is an interface to a desktop GUI. You do not have access to a terminal or applications "
    "menu. You must click on desktop icons to start applications.",
    "* Some applications may take time to start or process actions, so you may need to wait and "
    "take successive screenshots to see the results of your actions.",
    "* Whenever you intend to move the cursor to click on an element like an icon, you should "
    "consult a screenshot to determine the coordinates of the element before moving the cursor.",
    "* Make sure to click any buttons, links, icons, etc with the cursor tip in the center of the "
    "element. Don't click boxes on their edges unless asked.",
    "",
    "Actions:",
    '* key: Press a key or key-combination on the keyboard (text, e.g. "Return", "ctrl+a").',
    "* type: Type a string of text on the keyboard (text).",
    "* get_cursor_position: Get the current (x, y) pixel coordinate of the cursor on the screen.",
    "* mouse_move: Move the cursor to a specified (x, y) pixel coordinate on the screen (coordinate).",
    "* left_click: Click the left mouse button (at coordinate, if given).",
    "* left_click_drag: Click and drag the cursor to a specified (x, y) pixel coordinate (coordinate).",
    "* right_click: Click the right mouse button (at coordinate, if given).",
    "* middle_click: Click the middle mouse button (at coordinate, if given).",
    "* double_click: Double-click the left mouse button (at coordinate, if given).",
    "* get_screenshot: Take a screenshot of the screen (PNG).",
])
TOOL = {
    "name": "computer",
    "description": DESCRIPTION,
    "inputSchema": {
        "type": "object",
        "properties": {
            "action": {"type": "string", "enum": ACTIONS, "description": "The action to perform."},
            "coordinate": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2,
                           "description": "(x, y): pixels from the left and top edges of the screen."},
            "text": {"type": "string", "description": "Text to type, or the key(s) to press."},
        },
        "required": ["action"],
    },
}
#: Key names agents use that xdotool (X keysyms) spells differently.
KEY_NAMES = {"enter": "Return", "return": "Return", "esc": "Escape", "escape": "Escape",
             "backspace": "BackSpace", "tab": "Tab", "space": "space", "delete": "Delete",
             "del": "Delete", "up": "Up", "down": "Down", "left": "Left", "right": "Right",
             "home": "Home", "end": "End", "pageup": "Prior", "pagedown": "Next",
             "page_up": "Prior", "page_down": "Next", "cmd": "super", "command": "super",
             "win": "super", "meta": "super", "option": "alt", "control": "ctrl"}
BUTTONS = {"left_click": ["click", "1"], "right_click": ["click", "3"],
           "middle_click": ["click", "2"], "double_click": ["click", "--repeat", "2", "1"]}


class ToolError(Exception):
    """A bad call or a failed action: answered as an isError result."""


def xdotool(*args: str) -> str:
    try:
        done = subprocess.run(["xdotool", *args], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise ToolError("xdotool is not installed") from None
    if done.returncode != 0:
        raise ToolError(f"xdotool {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def cursor() -> tuple[int, int]:
    values = dict(line.split("=", 1) for line in xdotool("getmouselocation", "--shell").split())
    return int(values["X"]), int(values["Y"])


def point(coordinate: object) -> tuple[str, str]:
    if (not isinstance(coordinate, (list, tuple)) or len(coordinate) != 2
            or not all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in coordinate)):
        raise ToolError("coordinate must be [x, y], two numbers")
    x, y = (round(c) for c in coordinate)
    if x < 0 or y < 0:
        raise ToolError(f"coordinate ({x}, {y}) is off the screen")
    return str(x), str(y)


def key_combo(text: str) -> str:
    parts = [p.strip() for p in text.replace(" ", "+").split("+") if p.strip()]
    return "+".join(KEY_NAMES.get(p.lower(), p) for p in parts)


def png(width: int, height: int, rgb: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    stride = width * 3
    raw = b"".join(b"\x00" + rgb[y * stride:(y + 1) * stride] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) \
        + chunk(b"IEND", b"")


def screenshot() -> bytes:
    from Xlib import X, display

    try:
        screen = display.Display().screen()
    except Exception as exc:  # Xlib raises its own types for a missing display
        raise ToolError(f"cannot open the display {os.environ.get('DISPLAY')}: {exc}") from None
    width, height = screen.width_in_pixels, screen.height_in_pixels
    image = screen.root.get_image(0, 0, width, height, X.ZPixmap, 0xFFFFFFFF)
    data = image.data if isinstance(image.data, bytes) else bytes(image.data)
    if len(data) != width * height * 4:
        raise ToolError(f"unexpected screen format: depth {image.depth}, {len(data)} bytes")
    rgb = bytearray(width * height * 3)
    rgb[0::3], rgb[1::3], rgb[2::3] = data[2::4], data[1::4], data[0::4]  # BGRX -> RGB
    return png(width, height, bytes(rgb))


def run(arguments: dict) -> list[dict]:
    action = arguments.get("action")
    text = arguments.get("text")
    coordinate = arguments.get("coordinate")
    if action not in ACTIONS:
        raise ToolError(f"action must be one of {', '.join(ACTIONS)}")
    if action in ("key", "type"):
        if not isinstance(text, str) or not text:
            raise ToolError(f"{action} needs text")
        if action == "key":
            xdotool("key", "--clearmodifiers", key_combo(text))
            return [{"type": "text", "text": f"Pressed {text}"}]
        xdotool("type", "--delay", "12", "--", text)
        return [{"type": "text", "text": f"Typed {len(text)} characters"}]
    if action == "get_screenshot":
        data = base64.b64encode(screenshot()).decode()
        return [{"type": "image", "data": data, "mimeType": "image/png"}]
    if action == "get_cursor_position":
        x, y = cursor()
        return [{"type": "text", "text": json.dumps({"x": x, "y": y})}]
    if action in ("mouse_move", "left_click_drag"):
        if coordinate is None:
            raise ToolError(f"{action} needs coordinate")
        x, y = point(coordinate)
        if action == "mouse_move":
            xdotool("mousemove", "--sync", x, y)
            return [{"type": "text", "text": f"Moved the cursor to ({x}, {y})"}]
        xdotool("mousedown", "1", "mousemove", "--sync", x, y, "mouseup", "1")
        return [{"type": "text", "text": f"Dragged to ({x}, {y})"}]
    if coordinate is not None:  # a click, at the given point or where the cursor is
        xdotool("mousemove", "--sync", *point(coordinate))
    xdotool(*BUTTONS[action])
    x, y = cursor()
    return [{"type": "text", "text": f"{action.replace('_', ' ').capitalize()} at ({x}, {y})"}]


def handle(message: dict) -> dict | None:
    method, params = message.get("method"), message.get("params") or {}
    if "id" not in message:
        return None  # a notification
    if method == "initialize":
        result = {"protocolVersion": params.get("protocolVersion") or PROTOCOL_VERSION,
                  "capabilities": {"tools": {}},
                  "serverInfo": {"name": "sandbox-fleet-computer", "version": "1.0.0"}}
    elif method == "ping":
        result = {}
    elif method == "tools/list":
        result = {"tools": [TOOL]}
    elif method == "tools/call":
        if params.get("name") != "computer":
            return {"jsonrpc": "2.0", "id": message["id"],
                    "error": {"code": -32602, "message": f"Unknown tool: {params.get('name')}"}}
        try:
            result = {"content": run(params.get("arguments") or {}), "isError": False}
        except ToolError as exc:
            result = {"content": [{"type": "text", "text": f"Error: {exc}"}], "isError": True}
    else:
        return {"jsonrpc": "2.0", "id": message["id"],
                "error": {"code": -32601, "message": f"Method not found: {method}"}}
    return {"jsonrpc": "2.0", "id": message["id"], "result": result}


def main() -> None:
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            message = json.loads(line)
        except ValueError:
            reply = {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error"}}
        else:
            reply = handle(message) if isinstance(message, dict) else None
        if reply is not None:
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
