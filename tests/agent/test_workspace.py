"""The /workspace routes: the SDK's shapes, and paths confined to the workspace."""

from __future__ import annotations

import os
import secrets

import pytest


@pytest.fixture
def ws(agent):
    """A fresh folder inside the shared agent's workspace: (its relative name, its Path)."""
    name = f"t-{secrets.token_hex(4)}"
    path = agent.workspace / name
    path.mkdir()
    return name, path


@pytest.fixture
def outside(tmp_path):
    """A folder outside the workspace with a file that must never change."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.txt").write_text("untouched")
    return folder


def _snapshot(folder):
    return sorted(
        (p.relative_to(folder).as_posix(), p.read_bytes() if p.is_file() else None) for p in folder.rglob("*")
    )


def test_write_read_text_and_bytes(agent, ws):
    name, path = ws
    response = agent.session.put(
        f"{agent.url}/workspace/file", params={"path": f"{name}/sub/a.txt"}, data="héllo".encode(), timeout=5
    )
    assert response.status_code == 200
    entry = response.json()
    assert entry == {
        "path": str(path / "sub" / "a.txt"),
        "name": "a.txt",
        "type": "file",
        "size": len("héllo".encode()),
        "mtime_ms": entry["mtime_ms"],
    }
    assert isinstance(entry["mtime_ms"], int)
    text = agent.get("workspace/file", params={"path": f"{name}/sub/a.txt"})
    assert text.text == "héllo"
    assert text.headers["Content-Type"].startswith("text/plain")
    raw = bytes(range(256))
    agent.session.put(f"{agent.url}/workspace/file", params={"path": f"{name}/b.bin"}, data=raw, timeout=5)
    got = agent.get("workspace/file", params={"path": f"{name}/b.bin", "format": "bytes"})
    assert got.content == raw
    assert got.headers["Content-Type"] == "application/octet-stream"


def test_streamed_chunked_upload(agent, ws):
    name, path = ws
    chunks = (bytes([i]) * 100_000 for i in range(5))
    response = agent.session.put(
        f"{agent.url}/workspace/file", params={"path": f"{name}/big"}, data=chunks, timeout=10
    )
    assert response.status_code == 200, response.text
    assert response.json()["size"] == 500_000
    assert (path / "big").read_bytes() == b"".join(bytes([i]) * 100_000 for i in range(5))


def test_read_missing_or_dir_is_404_and_bad_format_400(agent, ws):
    name, _ = ws
    assert agent.get("workspace/file", params={"path": f"{name}/nope"}).json() == {"detail": "not found"}
    assert agent.get("workspace/file", params={"path": name}).status_code == 404
    assert agent.get("workspace/file", params={"path": name, "format": "xml"}).status_code == 400
    assert agent.get("workspace/file").status_code == 400


def test_write_onto_a_directory_is_409(agent, ws):
    name, _ = ws
    response = agent.session.put(f"{agent.url}/workspace/file", params={"path": name}, data=b"x", timeout=5)
    assert response.status_code == 409


def test_batch_upload_with_paths_as_the_sdk_sends_it(agent, ws):
    name, path = ws
    boundary = "----agentscope-0123"
    fields = [
        ("paths", f"{name}/x/one.txt"),
        ("files", ("one.txt", b"1", "text/plain")),
        ("paths", f"{name}/two.bin"),
        ("files", ("two.bin", b"\x00\x01\r\n--", "application/octet-stream")),
    ]
    body = _multipart(fields, boundary)
    response = agent.session.post(
        f"{agent.url}/workspace/files:batch",
        data=body,
        timeout=5,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 200, response.text
    assert [e["path"] for e in response.json()] == [str(path / "x" / "one.txt"), str(path / "two.bin")]
    assert (path / "two.bin").read_bytes() == b"\x00\x01\r\n--"
    # requests' own multipart encoder, falling back to the filename when no paths are given
    response = agent.session.post(
        f"{agent.url}/workspace/files:batch", timeout=5, files=[("files", (f"{name}/fallback.txt", b"f"))]
    )
    assert response.status_code == 200, response.text
    assert (path / "fallback.txt").read_bytes() == b"f"


def test_batch_mismatched_paths_is_400(agent, ws):
    name, _ = ws
    response = agent.session.post(
        f"{agent.url}/workspace/files:batch",
        timeout=5,
        files=[("files", ("a", b"1")), ("files", ("b", b"2"))],
        data={"paths": [f"{name}/a"]},
    )
    assert response.status_code == 400


def test_list_depth_exists_mkdir_move_delete(agent, ws):
    name, path = ws
    assert agent.post("workspace/mkdir", {"path": f"{name}/d/e"}).json() == {"created": True}
    assert agent.post("workspace/mkdir", {"path": f"{name}/d/e"}).json() == {"created": False}
    (path / "d" / "e" / "f.txt").write_text("f")
    (path / "top.txt").write_text("t")
    shallow = agent.get("workspace/list", params={"path": name}).json()
    assert sorted((e["name"], e["type"], e["size"]) for e in shallow) == [
        ("d", "dir", None),
        ("top.txt", "file", 1),
    ]
    deep = agent.get("workspace/list", params={"path": name, "depth": 3}).json()
    assert {e["path"] for e in deep} == {
        str(path / "d"),
        str(path / "d" / "e"),
        str(path / "d" / "e" / "f.txt"),
        str(path / "top.txt"),
    }
    assert agent.get("workspace/list", params={"path": name, "depth": 0}).status_code == 400
    assert agent.get("workspace/list", params={"path": f"{name}/top.txt"}).status_code == 404
    assert agent.get("workspace/exists", params={"path": f"{name}/top.txt"}).json() == {"exists": True}
    assert agent.get("workspace/exists", params={"path": f"{name}/nope"}).json() == {"exists": False}
    assert agent.post("workspace/mkdir", {"path": f"{name}/top.txt"}).status_code == 409
    moved = agent.post("workspace/move", {"source": f"{name}/top.txt", "destination": f"{name}/n/new.txt"})
    assert moved.json()["path"] == str(path / "n" / "new.txt")
    assert (path / "n" / "new.txt").read_text() == "t"
    assert (
        agent.post("workspace/move", {"source": f"{name}/gone", "destination": f"{name}/x"}).status_code
        == 404
    )
    assert agent.post("workspace/move", {"source": f"{name}/n"}).status_code == 400
    response = agent.session.delete(f"{agent.url}/workspace/entry", params={"path": f"{name}/d"}, timeout=5)
    assert response.status_code == 204
    assert response.content == b""
    assert not (path / "d").exists()
    assert (
        agent.session.delete(
            f"{agent.url}/workspace/entry", params={"path": f"{name}/d"}, timeout=5
        ).status_code
        == 204
    )


def test_absolute_paths_inside_the_workspace_are_accepted(agent, ws):
    name, path = ws
    (path / "abs.txt").write_text("abs")
    assert agent.get("workspace/file", params={"path": str(path / "abs.txt")}).text == "abs"


@pytest.mark.parametrize(
    "make_path",
    [
        lambda name, outside: "../outside/secret.txt",
        lambda name, outside: f"{name}/../../outside/secret.txt",
        lambda name, outside: str(outside / "secret.txt"),
        lambda name, outside: "/etc/passwd",
        lambda name, outside: f"{name}/link/secret.txt",
        lambda name, outside: f"{name}/filelink",
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "etc", "through-dir-symlink", "file-symlink"],
)
def test_escapes_are_refused_and_change_nothing_outside(agent, ws, outside, make_path):
    name, path = ws
    (path / "link").symlink_to(outside, target_is_directory=True)
    (path / "filelink").symlink_to(outside / "secret.txt")
    # Put the "outside" folder next to the workspace so the relative ../ forms point at it too.
    sibling = agent.workspace.parent / "outside"
    if not sibling.exists():
        sibling.symlink_to(outside, target_is_directory=True)
    target = make_path(name, outside)
    before = _snapshot(outside)
    denied = {"detail": f"Permission error. Access restricted to {agent.workspace} directory."}
    (path / "src.txt").write_text("inside")
    calls = [
        agent.get("workspace/file", params={"path": target}),
        agent.session.put(f"{agent.url}/workspace/file", params={"path": target}, data=b"owned", timeout=5),
        agent.get("workspace/exists", params={"path": target}),
        agent.get("workspace/list", params={"path": target}),
        agent.post("workspace/mkdir", {"path": target}),
        agent.post("workspace/mkdir", {"path": f"{target}/sub"}),
    ]
    if target != f"{name}/filelink":  # remove and move act on a symlink itself: see the next test
        calls += [
            agent.session.delete(f"{agent.url}/workspace/entry", params={"path": target}, timeout=5),
            agent.post("workspace/move", {"source": f"{name}/src.txt", "destination": target}),
            agent.post("workspace/move", {"source": target, "destination": f"{name}/stolen.txt"}),
        ]
    for response in calls:
        assert response.status_code == 403, (response.request.method, response.request.url, response.text)
        assert response.json() == denied
    assert (path / "src.txt").read_text() == "inside"
    assert _snapshot(outside) == before
    assert path.exists()


def test_removing_a_symlink_removes_the_link_not_its_target(agent, ws, outside):
    name, path = ws
    (path / "dirlink").symlink_to(outside, target_is_directory=True)
    (path / "filelink").symlink_to(outside / "secret.txt")
    listed = {e["name"]: e for e in agent.get("workspace/list", params={"path": name}).json()}
    assert listed["dirlink"]["type"] == "symlink"  # never described through the link
    assert listed["filelink"]["type"] == "symlink"
    (path / "src.txt").write_text("inside")
    moved = agent.post("workspace/move", {"source": f"{name}/src.txt", "destination": f"{name}/filelink"})
    assert moved.status_code == 200, moved.text
    assert not (path / "filelink").is_symlink()
    assert (path / "filelink").read_text() == "inside"
    (path / "filelink").unlink()
    (path / "filelink").symlink_to(outside / "secret.txt")
    for link in ("dirlink", "filelink"):
        response = agent.session.delete(
            f"{agent.url}/workspace/entry", params={"path": f"{name}/{link}"}, timeout=5
        )
        assert response.status_code == 204
        assert not os.path.lexists(path / link)
    assert (outside / "secret.txt").read_text() == "untouched"


def test_symlink_inside_the_workspace_is_followed(agent, ws):
    name, path = ws
    (path / "real.txt").write_text("real")
    (path / "alias.txt").symlink_to(path / "real.txt")
    assert agent.get("workspace/file", params={"path": f"{name}/alias.txt"}).text == "real"


def test_workspace_root_cannot_be_removed_or_moved(agent):
    assert (
        agent.session.delete(f"{agent.url}/workspace/entry", params={"path": "."}, timeout=5).status_code
        == 400
    )
    assert agent.post("workspace/move", {"source": ".", "destination": "elsewhere"}).status_code == 400
    assert agent.workspace.is_dir()


def test_prefix_sibling_is_outside(agent):
    sibling = agent.workspace.parent / (agent.workspace.name + "2")
    sibling.mkdir(exist_ok=True)
    (sibling / "f").write_text("x")
    assert agent.get("workspace/file", params={"path": str(sibling / "f")}).status_code == 403
    assert agent.get("workspace/file", params={"path": f"../{sibling.name}/f"}).status_code == 403


def _multipart(fields, boundary: str) -> bytes:
    """The body the SDK's ``_encode_multipart_formdata`` builds."""
    lines = []
    for name, value in fields:
        lines.append(b"--" + boundary.encode())
        if isinstance(value, tuple):
            filename, content, content_type = value
            lines.append(f'Content-Disposition: form-data; name="{name}"; filename="{filename}"'.encode())
            lines.append(f"Content-Type: {content_type}".encode())
            lines.append(b"")
            lines.append(content)
        else:
            lines.append(f'Content-Disposition: form-data; name="{name}"'.encode())
            lines.append(b"")
            lines.append(value.encode())
    lines.append(b"--" + boundary.encode() + b"--")
    lines.append(b"")
    return b"\r\n".join(lines)
