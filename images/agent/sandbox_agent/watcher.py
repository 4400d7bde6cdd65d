"""The ``/watcher/*`` routes: commit, diff and log the workspace with the git CLI.

The repository is made on first use. Shapes follow upstream's ``routers/runtime_watcher.py``
(``{"commit","message"}``, ``{"diffs": {path: unified diff}}``, ``{"logs": [...]}``), with two fixes:
a diff goes from ``commit_a`` to ``commit_b`` (and a log entry from the parent to the commit), where
upstream's came out reversed; and a repository with no commit yet answers empty instead of 500.
"""

from __future__ import annotations

import difflib
import os
import subprocess

from .errors import HTTPError, bad_request

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
GIT_TIMEOUT = 60.0
USER = ("User", "user@example.com")  # as upstream's initialize_git_user


class Git:
    def __init__(self, workspace: str, env: Mapping[str, str]) -> None:
        self.workspace = workspace
        self.env = {
            **env,
            "GIT_TERMINAL_PROMPT": "0",
            # The workspace is often a bind mount owned by another uid.
            "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "safe.directory", "GIT_CONFIG_VALUE_0": "*",
        }

    def run(self, *args: str, input_: bytes | None = None, check: bool = True) -> bytes:
        try:
            proc = subprocess.run(
                ["git", "-c", f"user.name={USER[0]}", "-c", f"user.email={USER[1]}",
                 "-c", "commit.gpgsign=false", "-c", "core.quotepath=false", *args],
                cwd=self.workspace, env=self.env, input=input_, capture_output=True, timeout=GIT_TIMEOUT)
        except FileNotFoundError:
            raise HTTPError(501, "git is not installed in this sandbox") from None
        except subprocess.TimeoutExpired:
            raise HTTPError(504, f"git {args[0]} did not finish within {int(GIT_TIMEOUT)} seconds") from None
        if check and proc.returncode != 0:
            raise HTTPError(500, f"git {args[0]} failed: {proc.stderr.decode('utf-8', 'replace').strip()}")
        return proc.stdout

    def ensure_repo(self) -> None:
        if not os.path.exists(os.path.join(self.workspace, ".git")):
            self.run("init", "-q")

    def head(self) -> str | None:
        out = self.run("rev-parse", "--verify", "-q", "HEAD^{commit}", check=False).strip()
        return out.decode() if out else None

    def commit_id(self, rev: str) -> str:
        out = self.run("rev-parse", "--verify", "-q", "--end-of-options", f"{rev}^{{commit}}",
                       check=False).strip()
        if not out:
            raise HTTPError(404, f"Unknown commit: {rev}")
        return out.decode()

    # ---- routes ----------------------------------------------------------------------------------
    def commit_changes(self, message: str) -> dict[str, Any]:
        self.ensure_repo()
        self.run("add", "-A")
        self.run("commit", "-q", "--allow-empty", "--no-verify", "-m", message)
        return {"commit": self.head(), "message": message}

    def generate_diff(self, commit_a: str | None, commit_b: str | None) -> dict[str, Any]:
        self.ensure_repo()
        if not commit_a and not commit_b:  # uncommitted changes against the last commit
            self.run("add", "-A")
            return {"diffs": self._diffs(self.head() or EMPTY_TREE, None)}
        if not (commit_a and commit_b):
            raise bad_request("Invalid commit range")
        return {"diffs": self._diffs(self.commit_id(commit_a), self.commit_id(commit_b))}

    def git_logs(self) -> dict[str, Any]:
        self.ensure_repo()
        if self.head() is None:
            return {"logs": []}
        raw = self.run("log", "-z", "--format=%H%x1f%P%x1f%an%x1f%cI%x1f%B")
        logs = []
        for record in filter(None, raw.decode("utf-8", "replace").split("\x00")):
            sha, parents, author, date, message = record.lstrip("\n").split("\x1f", 4)
            parent = parents.split()[0] if parents else None
            logs.append({"commit": sha, "author": author, "date": date, "message": message.strip(),
                         "diff": self._diffs(parent, sha) if parent else {}})
        return {"logs": logs}

    # ---- diffs -----------------------------------------------------------------------------------
    def _diffs(self, old: str, new: str | None) -> dict[str, str]:
        """Unified diffs per path from ``old`` to ``new`` (None: the index), built like upstream's."""
        args = ["diff-index", "--cached", "-z", "--no-renames", old] if new is None else \
            ["diff-tree", "-r", "-z", "--no-renames", old, new]
        fields = self.run(*args).decode("utf-8", "replace").split("\x00")
        changes: list[tuple[str, str, str]] = []  # (path, old blob, new blob)
        for meta, path in zip(fields[0::2], fields[1::2], strict=False):
            if not meta.startswith(":"):
                continue
            _, _, old_blob, new_blob, _ = meta[1:].split(" ", 4)
            changes.append((path, old_blob, new_blob))
        blobs = self._blobs({b for _, a, n in changes for b in (a, n) if set(b) != {"0"}})
        diffs = {}
        for path, old_blob, new_blob in changes:
            a, b = blobs.get(old_blob, b""), blobs.get(new_blob, b"")
            if b"\x00" in a or b"\x00" in b:
                diffs[path] = f"Binary files a/{path} and b/{path} differ"
                continue
            diffs[path] = "\n".join(difflib.unified_diff(
                a.decode("utf-8", "replace").splitlines(), b.decode("utf-8", "replace").splitlines(),
                fromfile=f"a/{path}", tofile=f"b/{path}", lineterm=""))
        return diffs

    def _blobs(self, shas: set) -> dict[str, bytes]:
        if not shas:
            return {}
        order = sorted(shas)
        out = self.run("cat-file", "--batch", input_="".join(s + "\n" for s in order).encode())
        blobs, pos = {}, 0
        for sha in order:
            header_end = out.index(b"\n", pos)
            header = out[pos:header_end].split()
            if len(header) < 3:  # "<sha> missing"
                pos = header_end + 1
                continue
            size = int(header[2])
            blobs[sha] = out[header_end + 1:header_end + 1 + size]
            pos = header_end + 1 + size + 1
        return blobs
