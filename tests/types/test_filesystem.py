"""The filesystem type, driven by the SDK's own FilesystemSandbox against a whole fleet."""

from __future__ import annotations

import pytest

from .conftest import assert_same_tools, reference_tools, texts

pytestmark = pytest.mark.docker

sandbox = pytest.importorskip("agentscope_runtime.sandbox")


@pytest.fixture
def fs_fleet(type_fleet):
    return type_fleet("filesystem")


def shell(sb, command: str) -> str:
    result = sb.run_shell_command(command=command)
    assert not result["isError"], result
    return "".join(c["text"] for c in result["content"] if c.get("description") == "stdout")


def ok(result: dict) -> str:
    assert result["isError"] is False, result
    return "".join(texts(result))


def refused(result: dict) -> str:
    text = "".join(texts(result))
    assert result["isError"] is True, result
    assert "Access denied" in text, text
    return text


def test_list_tools_match_upstream_tool_by_tool(fs_fleet):
    with sandbox.FilesystemSandbox(base_url=fs_fleet.url, bearer_token=fs_fleet.token) as sb:
        tools = sb.list_tools()
        assert set(tools) == {"filesystem", "generic"}
        assert_same_tools(tools["filesystem"], reference_tools("filesystem")["filesystem"])
        assert sb.list_tools(tool_type="filesystem") == {"filesystem": tools["filesystem"]}


def test_an_agent_edits_files_in_the_workspace(fs_fleet):
    with sandbox.FilesystemSandbox(base_url=fs_fleet.url, bearer_token=fs_fleet.token) as sb:
        assert "/workspace" in ok(sb.call_tool("list_allowed_directories", {}))
        ok(sb.create_directory("/workspace/project/src"))
        ok(sb.write_file("/workspace/project/src/app.py", "def greet():\n    return 'hello'\n"))
        ok(sb.write_file("project/README.md", "# Project\n"))  # relative to /workspace
        assert ok(sb.read_file("/workspace/project/src/app.py")) == "def greet():\n    return 'hello'\n"

        edit = [{"oldText": "return 'hello'", "newText": "return 'hello, world'"}]
        preview = ok(sb.edit_file("/workspace/project/src/app.py", edit, dry_run=True))
        assert "-    return 'hello'" in preview and "+    return 'hello, world'" in preview
        assert "'hello'" in shell(sb, "cat project/src/app.py")  # a dry run changes nothing
        ok(sb.edit_file("/workspace/project/src/app.py", edit))
        assert shell(sb, "python3 -c 'import sys; sys.path.insert(0, \"project/src\"); "
                         "import app; print(app.greet())'") == "hello, world\n"

        both = ok(sb.read_multiple_files(["/workspace/project/README.md",
                                          "/workspace/project/src/app.py"]))
        assert "# Project" in both and "hello, world" in both
        ok(sb.move_file("/workspace/project/README.md", "/workspace/project/docs.md"))
        listing = ok(sb.list_directory("/workspace/project"))
        assert "[FILE] docs.md" in listing and "[DIR] src" in listing and "README" not in listing
        assert "/workspace/project/src/app.py" in ok(sb.call_tool(
            "search_files", {"path": "/workspace", "pattern": "app"}))
        assert '"name": "app.py"' in ok(sb.call_tool("directory_tree", {"path": "/workspace/project"}))
        assert "size: " in ok(sb.call_tool("get_file_info", {"path": "/workspace/project/docs.md"}))
        # The files are the sandbox's /workspace, which the fleet's file API sees too.
        assert sb.fs.read("project/docs.md") == "# Project\n"


def test_paths_that_leave_the_workspace_are_refused(fs_fleet):
    with sandbox.FilesystemSandbox(base_url=fs_fleet.url, bearer_token=fs_fleet.token) as sb:
        shell(sb, "echo secret > /tmp/secret.txt && mkdir -p /workspace2 /tmp/outside "
                  "&& ln -s /tmp/secret.txt /workspace/link && ln -s /tmp/outside /workspace/linkdir "
                  "&& ln -s /tmp/outside/new.txt /workspace/dangling && mkdir -p /workspace/sub")
        refused(sb.read_file("/etc/passwd"))
        refused(sb.read_file("/workspace/../etc/passwd"))
        refused(sb.read_file("../etc/passwd"))
        refused(sb.read_file("/workspace/link"))            # a link to a file outside
        refused(sb.write_file("/workspace/link", "pwned"))
        refused(sb.write_file("/workspace/dangling", "pwned"))  # a dangling link pointing outside
        refused(sb.write_file("/workspace/linkdir/new.txt", "pwned"))  # through a linked folder
        refused(sb.write_file("/workspace2/x.txt", "pwned"))  # a sibling sharing the prefix
        refused(sb.write_file("/workspace/sub/../../tmp/x.txt", "pwned"))
        refused(sb.create_directory("/tmp/outside/made"))
        refused(sb.move_file("/workspace/sub", "/tmp/outside/moved"))
        refused(sb.edit_file("/workspace/link", [{"oldText": "secret", "newText": "pwned"}]))
        refused(sb.list_directory("/workspace/linkdir"))
        refused(sb.call_tool("get_file_info", {"path": "/workspace/linkdir"}))
        many = "".join(texts(sb.read_multiple_files(["/workspace/link", "/etc/hostname"])))
        assert many.count("Access denied") == 2 and "secret" not in many
        # Nothing outside /workspace changed.
        assert shell(sb, "cat /tmp/secret.txt; ls -A /tmp/outside /workspace2") == \
            "secret\n/tmp/outside:\n\n/workspace2:\n"
        assert shell(sb, "test -d /workspace/sub && echo kept") == "kept\n"
