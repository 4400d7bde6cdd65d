"""The gui type, driven by the SDK's own GuiSandbox against a whole fleet: a desktop screenshot,
clicks and typing into a real X application, and the noVNC page through /desktop/<id>/."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
from urllib.parse import urlsplit

import pytest
import requests

from .conftest import require_image, texts

pytestmark = pytest.mark.docker

sandbox = pytest.importorskip("agentscope_runtime.sandbox")

#: A Tk window with an entry and a button; it reports where they are on the screen and what
#: happens to them in /workspace, so the test can aim and check.
APP = r"""
import json, tkinter as tk
root = tk.Tk(); root.title("Sandbox test app"); root.geometry("360x200+200+150")
entry = tk.Entry(root); entry.pack(pady=20)
def clicked():
    open("/workspace/clicked.txt", "w").write(entry.get())
tk.Button(root, text="Save", command=clicked).pack()
def report():
    root.update_idletasks()
    where = {w: (x.winfo_rootx() + x.winfo_width() // 2, x.winfo_rooty() + x.winfo_height() // 2)
             for w, x in (("entry", entry), ("button", root.pack_slaves()[1]))}
    open("/workspace/where.json", "w").write(json.dumps(where))
root.after(500, report)
root.mainloop()
"""


@pytest.fixture
def gui_fleet(type_fleet):
    return type_fleet("gui")


def png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(b"\x89PNG\r\n\x1a\n"), data[:8]
    return struct.unpack(">II", data[16:24])


def ok(result: dict) -> str:
    assert result["isError"] is False, result
    return "".join(texts(result))


def test_list_tools_has_the_computer_tool(gui_fleet):
    with sandbox.GuiSandbox(base_url=gui_fleet.url, bearer_token=gui_fleet.token) as sb:
        tools = sb.list_tools()
        assert set(tools) == {"computer-use", "generic"}
        computer = tools["computer-use"]["computer"]["json_schema"]["function"]
        assert computer["parameters"]["required"] == ["action"]
        props = computer["parameters"]["properties"]
        assert set(props) == {"action", "coordinate", "text"}
        assert set(props["action"]["enum"]) == {
            "key", "type", "mouse_move", "left_click", "left_click_drag", "right_click",
            "middle_click", "double_click", "get_screenshot", "get_cursor_position"}


def test_an_agent_sees_the_desktop_types_and_clicks(gui_fleet):
    with sandbox.GuiSandbox(base_url=gui_fleet.url, bearer_token=gui_fleet.token) as sb:
        shot = sb.computer_use("get_screenshot")
        assert shot["isError"] is False, shot
        image = shot["content"][0]
        assert image["type"] == "image" and image["mimeType"] == "image/png"
        assert png_size(base64.b64decode(image["data"])) == (1024, 768)

        sb.fs.write("app.py", APP)
        sb.run_shell_command(command="setsid nohup python3 /workspace/app.py >/tmp/app.log 2>&1 &")
        deadline = time.monotonic() + 20
        while not sb.fs.exists("where.json"):
            assert time.monotonic() < deadline, sb.run_shell_command(command="cat /tmp/app.log")
            time.sleep(0.2)
        where = json.loads(sb.fs.read("where.json"))

        ok(sb.computer_use("mouse_move", coordinate=where["entry"]))
        x, y = where["entry"]
        assert json.loads(ok(sb.computer_use("get_cursor_position"))) == {"x": x, "y": y}
        ok(sb.computer_use("left_click"))
        ok(sb.computer_use("type", text="hello desktop"))
        ok(sb.computer_use("key", text="ctrl+a"))
        ok(sb.computer_use("left_click", coordinate=where["button"]))
        deadline = time.monotonic() + 10
        while not sb.fs.exists("clicked.txt"):
            assert time.monotonic() < deadline, "the click did not reach the button"
            time.sleep(0.2)
        assert sb.fs.read("clicked.txt") == "hello desktop"

        after = base64.b64decode(sb.computer_use("get_screenshot")["content"][0]["data"])
        assert after != base64.b64decode(image["data"])  # the window is on screen now
        wrong = sb.computer_use("mouse_move")
        assert wrong["isError"] is True and "coordinate" in "".join(texts(wrong))


def test_desktop_url_serves_the_novnc_page_with_its_own_token(gui_fleet, docker_client):
    with sandbox.GuiSandbox(base_url=gui_fleet.url, bearer_token=gui_fleet.token) as sb:
        url = sb.desktop_url
        info = sb.get_info()
        assert url.startswith(f"{gui_fleet.url}/desktop/{sb.sandbox_id}/vnc/vnc_relay.html?password=")
        container = docker_client.containers.get(info["container_id"])
        secret = container.labels["io.sandbox-fleet.secret"]  # never in the sandbox's env
        assert secret not in url

        browser = requests.Session()  # no fleet bearer token: a browser has none
        page = browser.get(url, timeout=30)
        assert page.status_code == 200, page.text
        assert "core/rfb.js" in page.text and page.headers["Content-Type"].startswith("text/html")
        # The page's own scripts load with the cookie the first answer set.
        script = browser.get(f"{gui_fleet.url}/desktop/{sb.sandbox_id}/vnc/core/rfb.js", timeout=30)
        assert script.status_code == 200
        assert "javascript" in script.headers["Content-Type"]

        base = f"{gui_fleet.url}/desktop/{sb.sandbox_id}/vnc/vnc_relay.html"
        assert requests.get(base, timeout=30).status_code == 403
        assert requests.get(base + f"?password={secret}", timeout=30).status_code == 403
        assert requests.get(f"{gui_fleet.url}/desktop/nope/vnc/vnc_relay.html?password=x",
                            timeout=30).status_code == 404
        other = browser.get(f"{gui_fleet.url}/desktop/{sb.sandbox_id}/tools/run_shell_command",
                            timeout=30)
        assert other.status_code == 404


def ws_upgrade(fleet_url: str, path: str) -> socket.socket:
    """Open a WebSocket to the fleet as a browser does (Origin included); the answer is unread."""
    address = urlsplit(fleet_url)
    sock = socket.create_connection((address.hostname, address.port), timeout=15)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {address.netloc}\r\nOrigin: {fleet_url}\r\n"
                  "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Protocol: binary\r\n\r\n").encode())
    return sock


def read_until(sock: socket.socket, marker: bytes, limit: int = 65536) -> bytes:
    data = b""
    while marker not in data and len(data) < limit:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_the_vnc_websocket_reaches_the_desktop_through_the_fleet(gui_fleet):
    with sandbox.GuiSandbox(base_url=gui_fleet.url, bearer_token=gui_fleet.token) as sb:
        token = sb.get_info()["runtime_token"]
        with ws_upgrade(gui_fleet.url, f"/desktop/{sb.sandbox_id}?password={token}") as ws:
            answer = read_until(ws, b"RFB 003.008")
            assert answer.startswith(b"HTTP/1.1 101 "), answer[:200]
            # x11vnc's first binary frame carries the RFB protocol banner
            assert b"RFB 003.008\n" in answer.split(b"\r\n\r\n", 1)[1]
        with ws_upgrade(gui_fleet.url, f"/desktop/{sb.sandbox_id}?password=wrong") as ws:
            assert read_until(ws, b"\r\n\r\n").startswith(b"HTTP/1.1 403 ")
        with ws_upgrade(gui_fleet.url, "/desktop/nope?password=x") as ws:
            assert read_until(ws, b"\r\n\r\n").startswith(b"HTTP/1.1 404 ")


def test_desktop_url_shows_the_desktop_in_a_real_browser(gui_fleet, docker_client):
    """Chromium (from the browser image, on the host's loopback) opens GuiSandbox.desktop_url and
    noVNC draws the sandbox's screen: a light Tk window on twm's black root."""
    browser_image = require_image(docker_client, "browser")
    script = os.path.join(os.path.dirname(__file__), "novnc_check.mjs")
    with sandbox.GuiSandbox(base_url=gui_fleet.url, bearer_token=gui_fleet.token) as sb:
        sb.run_shell_command(command=(
            "setsid nohup python3 -c \"import tkinter as tk; r = tk.Tk(); "
            "r.geometry('400x200+100+100'); r.mainloop()\" >/dev/null 2>&1 &"))
        deadline = time.monotonic() + 15
        while "1" not in "".join(texts(sb.run_shell_command(
                command="xdotool search --onlyvisible --class Tk | wc -l | tr -d ' '"))):
            assert time.monotonic() < deadline, "the Tk window did not appear"
            time.sleep(0.2)
        output = docker_client.containers.run(
            browser_image, ["node", "/check/novnc_check.mjs", sb.desktop_url, "300", "200"],
            entrypoint=[], network_mode="host", remove=True, security_opt=["no-new-privileges"],
            volumes={script: {"bind": "/check/novnc_check.mjs", "mode": "ro"}})
        seen = json.loads(output.decode().strip().splitlines()[-1])
        assert seen["status"] == "Connected", seen
        assert (seen["width"], seen["height"]) == (1024, 768)
        assert min(seen["pixel"]) > 150, seen  # inside the window, not the black root
