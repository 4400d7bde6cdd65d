"""sandbox_core.safecopy on real trees in tmp_path (no Docker): every trick a sandbox can leave in
its workspace (links of every aim, links and hard links waiting in the destination, FIFOs,
sockets, deep trees), and after each, a canary folder outside the trees is untouched."""

import os
import socket
import stat

import pytest

from sandbox_core import safecopy
from sandbox_core.safecopy import UnsafePath


@pytest.fixture
def trees(tmp_path):
    src, dst, canary = tmp_path / "src", tmp_path / "dst", tmp_path / "canary"
    for folder in (src, dst, canary):
        folder.mkdir()
    (canary / "keep").write_text("host file")
    yield src, dst, canary
    assert sorted(os.listdir(canary)) == ["keep"], "something was written into the canary"
    assert (canary / "keep").read_text() == "host file"
    assert stat.S_IMODE(canary.stat().st_mode) != 0o777


def copy(src, dst) -> safecopy.Report:
    src_fd, dst_fd = safecopy.open_dir(str(src)), safecopy.open_dir(str(dst), create=True)
    try:
        return safecopy.copy_tree(src_fd, dst_fd)
    finally:
        os.close(src_fd)
        os.close(dst_fd)


def listing(root) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, n), root)
                  for d, dirs, files in os.walk(root) for n in dirs + files)


def test_regular_files_and_folders_are_copied_with_their_modes(trees):
    src, dst, _ = trees
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "f.txt").write_text("deep")
    (src / "top.sh").write_text("#!/bin/sh\n")
    os.chmod(src / "top.sh", 0o755)
    os.utime(src / "top.sh", (1_000_000, 1_000_000))
    report = copy(src, dst)
    assert listing(dst) == ["a", "a/b", "a/b/f.txt", "top.sh"]
    assert (dst / "a" / "b" / "f.txt").read_text() == "deep"
    assert stat.S_IMODE((dst / "top.sh").stat().st_mode) == 0o755
    assert (dst / "top.sh").stat().st_mtime == 1_000_000
    assert report.files == 2 and not report.skipped


@pytest.mark.parametrize("where", ["sub", "a/b/sub"])
@pytest.mark.parametrize("aim", ["canary", "/", "..", "canary/keep"])
def test_links_in_the_source_are_skipped_at_any_depth(trees, where, aim):
    src, dst, canary = trees
    link = src / where
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(canary if aim == "canary" else canary / "keep" if aim == "canary/keep" else aim)
    report = copy(src, dst)
    assert not os.path.lexists(dst / where)
    assert report.skipped == {"link": 1}
    assert "1 skipped (1 link)" in report.describe()


@pytest.mark.parametrize("where", ["sub", "a/b/sub"])
def test_a_link_waiting_in_the_destination_is_replaced_never_followed(trees, where):
    """The reproduced attack: storage holds sub -> host folder, the next copy has a real sub/."""
    src, dst, canary = trees
    (dst / where).parent.mkdir(parents=True, exist_ok=True)
    (dst / where).symlink_to(canary)
    (dst / "file").symlink_to(canary / "keep")
    (src / where).mkdir(parents=True)
    (src / where / "planted").write_text("x")
    (src / "file").write_text("over the link")
    copy(src, dst)
    assert not (dst / where).is_symlink() and (dst / where / "planted").read_text() == "x"
    assert not (dst / "file").is_symlink() and (dst / "file").read_text() == "over the link"


def test_a_link_as_the_top_of_either_side_is_refused(trees):
    src, dst, canary = trees
    (src.parent / "src_link").symlink_to(canary)
    (src.parent / "dst_link").symlink_to(canary)
    for path in ("src_link", "dst_link"):
        with pytest.raises(UnsafePath, match="link"):
            safecopy.open_dir(str(src.parent / path), create=True)
        with pytest.raises(UnsafePath):
            safecopy.ensure_dir(str(src.parent / path), mode=0o777)


def test_open_below_refuses_or_replaces_a_link_on_the_way(trees):
    _, dst, canary = trees
    (dst / "a").symlink_to(canary)
    top = safecopy.open_dir(str(dst))
    try:
        with pytest.raises(UnsafePath):
            safecopy.open_below(top, ("a", "b"), create=True)
        with pytest.raises(UnsafePath):
            safecopy.open_below(top, ("..",), create=True)
        os.close(safecopy.open_below(top, ("a", "b"), create=True, replace=True))
    finally:
        os.close(top)
    assert (dst / "a" / "b").is_dir() and not (dst / "a").is_symlink()


def test_a_hard_link_in_the_destination_is_not_written_through(trees):
    src, dst, canary = trees
    os.link(canary / "keep", dst / "shared")
    (src / "shared").write_text("sandbox data")
    copy(src, dst)
    assert (dst / "shared").read_text() == "sandbox data"
    assert (dst / "shared").stat().st_ino != (canary / "keep").stat().st_ino


def test_hard_links_inside_the_source_are_copied_as_files(trees):
    src, dst, _ = trees
    (src / "one").write_text("same inode")
    os.link(src / "one", src / "two")
    assert copy(src, dst).files == 2
    assert (dst / "two").read_text() == "same inode"


@pytest.mark.timeout(60)
def test_fifos_and_sockets_are_skipped_without_blocking(trees):
    src, dst, _ = trees
    os.mkfifo(src / "fifo")
    os.mkfifo(dst / "was_fifo")  # a FIFO in the destination where a file goes is replaced
    (src / "was_fifo").write_text("file")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(src / "sock"))
        report = copy(src, dst)
    assert report.skipped == {"fifo": 1, "socket": 1}
    assert listing(dst) == ["was_fifo"] and (dst / "was_fifo").read_text() == "file"


def test_set_id_bits_are_dropped(trees):
    src, dst, _ = trees
    (src / "tool").write_text("#!/bin/sh\n")
    os.chmod(src / "tool", 0o6755)
    (src / "shared").mkdir()
    os.chmod(src / "shared", 0o3777)
    copy(src, dst)
    assert stat.S_IMODE((dst / "tool").stat().st_mode) == 0o755
    assert stat.S_IMODE((dst / "shared").stat().st_mode) == 0o1777


def test_a_directory_in_the_destination_where_a_file_goes_is_replaced(trees):
    src, dst, _ = trees
    (dst / "x" / "y").mkdir(parents=True)
    (dst / "x" / "y" / "z").write_text("old")
    (src / "x").write_text("now a file")
    copy(src, dst)
    assert (dst / "x").read_text() == "now a file"
    assert listing(dst) == ["x"]


def test_too_deep_folders_are_skipped_and_any_depth_is_removed(trees):
    src, dst, canary = trees
    deep = src.joinpath(*["d"] * (safecopy.MAX_DEPTH * 3))
    deep.mkdir(parents=True)
    (deep / "bottom").write_text("b")
    (deep / "link").symlink_to(canary)
    report = copy(src, dst)
    assert report.skipped == {"too deep": 1}
    assert dst.joinpath(*["d"] * safecopy.MAX_DEPTH).is_dir()
    safecopy.remove_tree(str(src))
    assert not os.path.lexists(src)


def test_remove_tree_removes_links_not_their_targets(trees):
    src, _, canary = trees
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "to_canary").symlink_to(canary)
    (src / "a" / "to_keep").symlink_to(canary / "keep")
    (src / "to_root").symlink_to("/")
    os.mkfifo(src / "a" / "fifo")
    safecopy.remove_tree(str(src))
    assert not os.path.lexists(src)
    (src.parent / "top_link").symlink_to(canary)
    safecopy.remove_tree(str(src.parent / "top_link"))
    assert not os.path.lexists(src.parent / "top_link")
    safecopy.remove_tree(str(src.parent / "never_was"))
