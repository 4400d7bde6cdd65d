"""The browser type, driven by the SDK's own BrowserSandbox against a whole fleet.

Chromium inside the sandbox browses only a page served inside that same sandbox (on its loopback).
"""

from __future__ import annotations

import base64
import re
import struct

import pytest

from .conftest import assert_same_tools, reference_tools, texts

pytestmark = pytest.mark.docker

sandbox = pytest.importorskip("agentscope_runtime.sandbox")

PORT = 8765
FORM = """<!doctype html>
<html><head><title>Order form</title></head>
<body>
<h1>Order form</h1>
<form id="order">
  <label>Name <input id="name" name="name"></label>
  <label>Colour <select id="colour" name="colour">
    <option value="red">Red</option><option value="blue">Blue</option></select></label>
  <button type="submit">Send</button>
</form>
<p id="result"></p>
<script>
document.getElementById('order').addEventListener('submit', function (e) {
  e.preventDefault();
  fetch('/echo.json?name=' + encodeURIComponent(document.getElementById('name').value))
    .then(function (r) { return r.json(); })
    .then(function (data) {
      document.getElementById('result').textContent =
        'Thanks ' + document.getElementById('name').value + ', your ' +
        document.getElementById('colour').value + ' order is ' + data.status;
    });
});
</script>
</body></html>
"""


@pytest.fixture
def browser_fleet(type_fleet):
    return type_fleet("browser")


def ok(result: dict) -> str:
    assert result["isError"] is False, result
    return "\n".join(texts(result))


def ref_of(snapshot: str, role: str, name: str) -> str:
    match = re.search(rf'{role} "{re.escape(name)}"[^\n]*\[ref=(\w+)\]', snapshot)
    assert match, f"no {role} {name!r} in the snapshot:\n{snapshot}"
    return match.group(1)


def image_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG or JPEG."""
    if data.startswith(b"\x89PNG"):
        return struct.unpack(">II", data[16:24])
    assert data.startswith(b"\xff\xd8"), data[:8]
    i = 2
    while i < len(data):
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xC3:
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        i += 2 + length
    raise AssertionError("no frame in the JPEG")


def test_list_tools_match_upstream_tool_by_tool(browser_fleet):
    with sandbox.BrowserSandbox(base_url=browser_fleet.url, bearer_token=browser_fleet.token) as sb:
        tools = sb.list_tools()
        assert set(tools) == {"playwright", "generic"}
        assert_same_tools(tools["playwright"], reference_tools("browser")["playwright"])


def test_an_agent_fills_a_form_on_a_page_served_in_the_sandbox(browser_fleet):
    with sandbox.BrowserSandbox(base_url=browser_fleet.url, bearer_token=browser_fleet.token) as sb:
        sb.fs.write("site/form.html", FORM)
        sb.fs.write("site/echo.json", '{"status": "confirmed"}')
        started = sb.run_shell_command(
            command=f"setsid nohup python3 -m http.server {PORT} --bind 127.0.0.1 --directory "
                    "/workspace/site >/dev/null 2>&1 & "
                    f"for i in $(seq 50); do python3 -c 'import socket; socket.create_connection("
                    f"(\"127.0.0.1\", {PORT}))' 2>/dev/null && break; sleep 0.1; done; echo up")
        assert "up" in "".join(texts(started))

        page = ok(sb.browser_navigate(f"http://127.0.0.1:{PORT}/form.html"))
        assert "Order form" in page
        name = ref_of(page, "textbox", "Name")
        colour = ref_of(page, "combobox", "Colour")
        send = ref_of(page, "button", "Send")
        ok(sb.browser_type("Name field", name, "Ada"))
        ok(sb.browser_select_option("Colour list", colour, ["blue"]))
        ok(sb.browser_click("Send button", send))
        ok(sb.browser_wait_for(text="order is confirmed"))
        assert "Thanks Ada, your blue order is confirmed" in ok(sb.browser_snapshot())

        shot = sb.browser_take_screenshot()
        assert shot["isError"] is False, shot
        images = [c for c in shot["content"] if c["type"] == "image"]
        assert images and images[0]["mimeType"] in ("image/jpeg", "image/png")
        assert image_size(base64.b64decode(images[0]["data"])) == (1024, 768)

        tabs = ok(sb.browser_tab_list())
        assert "Order form" in tabs
        requests_seen = ok(sb.browser_network_requests())
        assert "/echo.json?name=Ada" in requests_seen
        ok(sb.browser_navigate_back())
        ok(sb.browser_close())
