"""``/workspace/archive``: the workspace out and in as a tar stream (regular files and folders only)."""

import io
import os
import tarfile


def tar_of(entries: dict[str, bytes | None], links: dict[str, str] | None = None) -> bytes:
    """A tar: name -> content (None: a folder), plus symbolic links name -> target."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, content in entries.items():
            info = tarfile.TarInfo(name)
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), 0o640
                tar.addfile(info, io.BytesIO(content))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return out.getvalue()


def test_the_workspace_goes_out_as_files_and_folders_only(make_agent, tmp_path):
    agent = make_agent()
    ws = agent.workspace
    (ws / "a.txt").write_text("a")
    (ws / "sub" / "deeper").mkdir(parents=True)
    (ws / "sub" / "deeper" / "b.bin").write_bytes(os.urandom(3 << 20))  # several chunks
    (ws / "link").symlink_to("/etc/passwd")
    os.mkfifo(ws / "fifo")
    response = agent.get("workspace/archive", stream=True)
    assert response.status_code == 200
    with tarfile.open(fileobj=response.raw, mode="r|") as tar:
        got = {m.name: (m.type, tar.extractfile(m).read() if m.isfile() else None) for m in tar}
    assert set(got) == {"a.txt", "sub", "sub/deeper", "sub/deeper/b.bin"}
    assert got["sub/deeper/b.bin"][1] == (ws / "sub" / "deeper" / "b.bin").read_bytes()
    assert got["a.txt"] == (tarfile.REGTYPE, b"a")
    assert agent.get("healthz").status_code == 200  # the archive had a connection of its own


def test_a_tar_comes_in_without_leaving_the_workspace(make_agent, tmp_path):
    agent = make_agent()
    outside = tmp_path / "outside"
    outside.mkdir()
    (agent.workspace / "escape").symlink_to(outside)
    body = tar_of({"kept/one.txt": b"1", "kept": None, "../up.txt": b"x", "/abs.txt": b"x",
                   "escape/planted.txt": b"x", "big.bin": os.urandom(2 << 20)},
                  links={"kept/link": "/etc"})
    response = agent.session.put(f"{agent.url}/workspace/archive", data=iter([body[:7000], body[7000:]]),
                                 timeout=30)
    assert response.status_code == 200, response.text
    # a leading / is dropped (the name is the workspace's); .., a way out through a link the
    # workspace holds, and the link itself are left out
    assert response.json() == {"files": 3, "folders": 1, "skipped": 3}
    assert (agent.workspace / "kept" / "one.txt").read_text() == "1"
    assert (agent.workspace / "abs.txt").read_text() == "x"
    assert (agent.workspace / "big.bin").stat().st_size == 2 << 20
    assert not (agent.workspace / "kept" / "link").exists()
    assert list(outside.iterdir()) == [] and not (tmp_path / "up.txt").exists()


def test_what_is_not_a_tar_is_a_400(make_agent):
    agent = make_agent()
    response = agent.session.put(f"{agent.url}/workspace/archive", data=b"x" * 2000, timeout=30)
    assert response.status_code == 400 and "not a tar stream" in response.json()["detail"]
