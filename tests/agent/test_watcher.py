"""The /watcher git routes, run with the git CLI in a workspace made on first use."""

from __future__ import annotations


def test_commit_diff_and_logs(make_agent):
    agent = make_agent()
    assert agent.get("watcher/git_logs").json() == {"logs": []}
    (agent.workspace / "a.txt").write_text("one\n")
    first = agent.post("watcher/commit_changes", {"commit_message": "first"}).json()
    assert first["message"] == "first"
    assert len(first["commit"]) == 40
    (agent.workspace / "a.txt").write_text("two\n")
    (agent.workspace / "b.txt").write_text("new\n")
    pending = agent.post("watcher/generate_diff", {"commit_a": None, "commit_b": None}).json()
    assert pending == {
        "diffs": {
            "a.txt": "--- a/a.txt\n+++ b/a.txt\n@@ -1 +1 @@\n-one\n+two",
            "b.txt": "--- a/b.txt\n+++ b/b.txt\n@@ -0,0 +1 @@\n+new",
        }
    }
    second = agent.post("watcher/commit_changes", {"commit_message": "second"}).json()
    between = agent.post("watcher/generate_diff", {"commit_a": first["commit"], "commit_b": second["commit"]})
    assert between.json() == pending
    logs = agent.get("watcher/git_logs").json()["logs"]
    assert [entry["message"] for entry in logs] == ["second", "first"]
    assert logs[0]["commit"] == second["commit"]
    assert logs[0]["author"] == "User"
    assert logs[0]["diff"] == pending["diffs"]
    assert logs[1]["diff"] == {}
    assert "T" in logs[0]["date"]


def test_commit_message_defaults_and_bad_ranges(make_agent):
    agent = make_agent()
    assert agent.post("watcher/commit_changes", {}).json()["message"] == "Automated commit"
    assert agent.post("watcher/generate_diff", {"commit_a": "HEAD", "commit_b": None}).status_code == 400
    response = agent.post("watcher/generate_diff", {"commit_a": "HEAD", "commit_b": "no-such-commit"})
    assert response.status_code == 404
    assert response.json() == {"detail": "Unknown commit: no-such-commit"}


def test_binary_files_are_named_not_dumped(make_agent):
    agent = make_agent()
    agent.post("watcher/commit_changes", {"commit_message": "empty"})
    (agent.workspace / "blob.bin").write_bytes(b"\x00\x01\x02")
    diffs = agent.post("watcher/generate_diff", {}).json()["diffs"]
    assert diffs == {"blob.bin": "Binary files a/blob.bin and b/blob.bin differ"}
