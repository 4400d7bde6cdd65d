"""The agent's streaming multipart parser: split anywhere, sizes, malformed bodies, and peak memory."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "images" / "agent"))
from sandbox_agent import multipart  # noqa: E402
from sandbox_agent.errors import HTTPError  # noqa: E402

BOUNDARY = "----fleet-Bnd0"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
MiB = 1 << 20


def _part(name: str, data: bytes, filename: str | None = None, kind: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    head = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
    if kind:
        head += f"Content-Type: {kind}\r\n"
    return head.encode() + b"\r\n" + data + b"\r\n"


def _body(*parts: bytes, epilogue: bytes = b"\r\n") -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--".encode() + epilogue


# Data that looks like the delimiter without being it, at the edges of the part.
TRICKY = b"\r\n--" + BOUNDARY[:-1].encode() + b"\r\n--" + b"\r\n\r\n" + b"-" * 20 + b"\r"
BODY = _body(_part("paths", "dir/é.txt".encode()), _part("files", TRICKY, "one.bin", "application/x"),
             _part("files", b"", "empty.txt"), _part("other", b"ignored", "skip.bin"),
             _part("note", b"plain field"), epilogue=b"\r\nepilogue, ignored\r\n")


def _parse(chunks, spool_names=("files",)):
    spooled: list[io.BytesIO] = []

    def spool(name, filename, kind):
        if name in spool_names:
            spooled.append(io.BytesIO())
            return spooled[-1]
        return None if filename is None else multipart.DISCARD

    parts = multipart.parse(chunks, CONTENT_TYPE, spool)
    return [(p.name, p.filename, p.content_type,
             p.data.getvalue() if isinstance(p.data, io.BytesIO) else p.data) for p in parts]


EXPECTED = [
    ("paths", None, None, "dir/é.txt".encode()),
    ("files", "one.bin", "application/x", TRICKY),
    ("files", "empty.txt", None, b""),
    ("other", "skip.bin", None, multipart.DISCARD),
    ("note", None, None, b"plain field"),
]


def test_one_chunk_and_one_byte_at_a_time():
    assert _parse([BODY]) == EXPECTED
    assert _parse(BODY[i:i + 1] for i in range(len(BODY))) == EXPECTED


def test_every_split_into_two_and_three_chunks():
    for i in range(len(BODY) + 1):
        assert _parse([BODY[:i], BODY[i:]]) == EXPECTED, f"split at {i}"
    for i in range(0, len(BODY), 7):
        for j in range(i, len(BODY), 11):
            assert _parse([BODY[:i], BODY[i:j], BODY[j:]]) == EXPECTED, f"split at {i}, {j}"


@pytest.mark.parametrize("size", [1, MiB - 1, MiB, MiB + 1, 3 * MiB + 17])
def test_sizes_in_chunks_of_the_agents_read_size(size):
    data = os.urandom(size)
    body = _body(_part("files", data, "f.bin"))
    chunks = [body[i:i + MiB] for i in range(0, len(body), MiB)]
    [(name, filename, _, got)] = _parse(chunks)
    assert (name, filename, len(got)) == ("files", "f.bin", size)
    assert got == data


@pytest.mark.parametrize(("content_type", "body", "detail"), [
    ("application/json", BODY, "expected a multipart/form-data body"),
    ("multipart/form-data", BODY, "multipart body without a boundary"),
    (CONTENT_TYPE, b"", "multipart body without its closing boundary"),
    (CONTENT_TYPE, b"no delimiter at all", "multipart body without its closing boundary"),
    (CONTENT_TYPE, BODY[:-40], "multipart body without its closing boundary"),  # truncated
    (CONTENT_TYPE, f"--{BOUNDARY}\r\nX: y\r\n--{BOUNDARY}--".encode(), "malformed multipart part"),
    (CONTENT_TYPE, f"--{BOUNDARY}\r\n".encode() + b"X: " + b"y" * (20 << 10),
     "multipart part headers too long"),
])
def test_malformed_bodies_are_400(content_type, body, detail):
    with pytest.raises(HTTPError) as caught:
        multipart.parse([body], content_type, lambda *header: None)
    assert (caught.value.status, caught.value.detail) == (400, detail)


def test_fields_kept_in_memory_are_bounded():
    big = _body(_part("paths", b"x" * (multipart.MAX_FIELDS + 1)))
    with pytest.raises(HTTPError) as caught:
        multipart.parse([big], CONTENT_TYPE, lambda *header: None)
    assert caught.value.status == 413


# ---- through the agent ----------------------------------------------------------------------------
def _post(agent, body, chunk: int | None = None, content_type: str = CONTENT_TYPE):
    data = body if chunk is None else (body[i:i + chunk] for i in range(0, len(body), chunk))
    return agent.session.post(f"{agent.url}/workspace/files:batch", data=data, timeout=60,
                              headers={"Content-Type": content_type})


def _leftovers(agent) -> list[str]:
    return [n for n in os.listdir(agent.workspace) if n.startswith(".upload-")]


@pytest.mark.parametrize(("chunk", "size"), [(None, 2 * MiB + 3), (5, 0), (4096, 2 * MiB + 3)],
                         ids=["sized", "chunked-5B", "chunked-4KiB"])
def test_uploads_through_the_agent(agent, chunk, size):
    data = os.urandom(size) + TRICKY
    body = _body(_part("paths", f"up/{chunk}/a.bin".encode()), _part("files", data, "a.bin"),
                 _part("paths", f"up/{chunk}/b.txt".encode()), _part("files", b"b", "b.txt"))
    response = _post(agent, body, chunk)
    assert response.status_code == 200, response.text
    assert response.headers.get("Connection") != "close"  # the body was read to its end
    folder = agent.workspace / "up" / str(chunk)
    assert [e["path"] for e in response.json()] == [str(folder / "a.bin"), str(folder / "b.txt")]
    assert (folder / "a.bin").read_bytes() == data
    assert (folder / "b.txt").read_bytes() == b"b"
    assert _leftovers(agent) == []


def test_an_upload_keeps_the_mode_of_the_file_it_replaces(agent):
    script = agent.workspace / "run.sh"
    script.write_text("old")
    script.chmod(0o755)
    response = _post(agent, _body(_part("files", b"#!/bin/sh\n", "run.sh")))
    assert response.status_code == 200, response.text
    assert script.read_bytes() == b"#!/bin/sh\n"
    assert script.stat().st_mode & 0o777 == 0o755


@pytest.mark.parametrize(("body", "content_type"), [
    (BODY[:-40], CONTENT_TYPE),
    (f"--{BOUNDARY}\r\nno blank line\r\n--{BOUNDARY}--\r\n".encode(), CONTENT_TYPE),
    (BODY, "multipart/form-data"),
    (_body(_part("paths", b"x"), _part("files", b"1", "a"), _part("files", b"2", "b")), CONTENT_TYPE),
    (_body(_part("paths", b"/etc/passwd"), _part("files", b"1", "a")), CONTENT_TYPE),
])
def test_bad_uploads_are_4xx_and_change_nothing(agent, body, content_type):
    before = sorted(os.listdir(agent.workspace))
    response = _post(agent, body, content_type=content_type)
    assert response.status_code in (400, 403), response.text
    assert response.json()["detail"]
    assert sorted(os.listdir(agent.workspace)) == before  # no spooled file is left behind


def _peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


@pytest.mark.timeout(300)
def test_a_large_upload_streams_to_disk(make_agent):
    """Peak RSS grows by far less than the upload: the body is never held in memory."""
    agent = make_agent(LOG_LEVEL="INFO")
    assert agent.get("healthz").text == "OK"
    size = 128 * MiB
    before = _peak_rss_kib(agent.proc.pid)
    block = os.urandom(MiB)
    head = _part("files", b"", "big.bin")[:-2]  # headers only: the data follows, then the delimiter

    def body():
        yield head
        for _ in range(size // MiB):
            yield block
        yield b"\r\n" + _body()

    response = agent.session.post(f"{agent.url}/workspace/files:batch", data=body(), timeout=240,
                                  headers={"Content-Type": CONTENT_TYPE})
    assert response.status_code == 200, response.text
    assert response.json()[0]["size"] == size
    growth = (_peak_rss_kib(agent.proc.pid) - before) * 1024
    assert growth < size // 4, f"peak RSS grew by {growth / MiB:.0f} MiB for a {size // MiB} MiB upload"
