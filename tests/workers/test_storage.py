"""Workspace storage: the local folder (real), and OSS against a mock bucket (OSS is a cloud API
that cannot run here; the mock stands for it and says so in its name)."""

import io
import os
from types import SimpleNamespace

import pytest

from sandbox_core.errors import SettingsError
from sandbox_workers.storage import LocalStorage, OSSStorage


def test_local_round_trip_and_confinement(tmp_path):
    root = tmp_path / "store"
    (root / "proj").mkdir(parents=True)
    (root / "proj" / "a.txt").write_text("from storage")
    (root / "escape").symlink_to("/etc")
    storage = LocalStorage(str(root))
    workspace = tmp_path / "ws"
    storage.download_folder(str(root / "proj"), str(workspace))
    assert (workspace / "a.txt").read_text() == "from storage"
    (workspace / "b.txt").write_text("made in the sandbox")
    storage.upload_folder(str(workspace), str(root / "proj"))
    assert (root / "proj" / "b.txt").read_text() == "made in the sandbox"
    for outside in (str(tmp_path / "elsewhere"), str(root / ".." / "elsewhere"), "/etc"):
        with pytest.raises(SettingsError, match="outside STORAGE_FOLDER"):
            storage.upload_folder(str(workspace), outside)
        with pytest.raises(SettingsError, match="outside STORAGE_FOLDER"):
            storage.download_folder(outside, str(workspace))
    with pytest.raises(SettingsError, match="leads through a link"):
        storage.download_folder(str(root / "escape"), str(workspace))
    assert storage.download_folder(str(root / "never_written"), str(workspace)).files == 0
    # A link in STORAGE_FOLDER where a storage folder goes is storage's own: it is replaced.
    etc_before = sorted(os.listdir("/etc"))
    storage.upload_folder(str(workspace), str(root / "escape" / "deeper"))
    assert not (root / "escape").is_symlink() and (root / "escape" / "deeper" / "b.txt").is_file()
    assert sorted(os.listdir("/etc")) == etc_before


def test_local_storage_under_a_linked_storage_folder(tmp_path):
    """The operator's STORAGE_FOLDER may itself be a link; paths through either name work."""
    (tmp_path / "real").mkdir()
    (tmp_path / "linked").symlink_to(tmp_path / "real")
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "f").write_text("kept")
    storage = LocalStorage(str(tmp_path / "linked"))
    storage.upload_folder(str(workspace), str(tmp_path / "linked" / "s1"))
    assert (tmp_path / "real" / "s1" / "f").read_text() == "kept"


@pytest.fixture
def canary(tmp_path):
    folder = tmp_path / "canary"
    folder.mkdir()
    (folder / "keep").write_text("host file")
    yield folder
    assert sorted(os.listdir(folder)) == ["keep"]


@pytest.mark.parametrize("where", ["sub", "a/sub"])
def test_the_reproduced_escape_through_storage_is_closed(tmp_path, canary, where):
    """Session 1 leaves sub -> host folder; session 2 makes sub a real folder with a file in it.
    Neither copy-back follows the link, and the second one succeeds."""
    root = tmp_path / "store"
    root.mkdir()
    storage = LocalStorage(str(root))
    ws1 = tmp_path / "ws1"
    (ws1 / where).parent.mkdir(parents=True)
    (ws1 / where).symlink_to(canary)
    report = storage.upload_folder(str(ws1), str(root / "victim"))
    assert report.skipped == {"link": 1}
    assert not os.path.lexists(root / "victim" / where)
    # What the old copy-back stored: the link itself, waiting in STORAGE_FOLDER.
    (root / "victim" / where).symlink_to(canary)
    ws2 = tmp_path / "ws2"
    (ws2 / where).mkdir(parents=True)
    (ws2 / where / "planted").write_text("x")
    storage.upload_folder(str(ws2), str(root / "victim"))
    assert (root / "victim" / where / "planted").read_text() == "x"
    # And a stored link is never handed to the next sandbox either.
    (root / "victim" / "again").symlink_to(canary)
    ws3 = tmp_path / "ws3"
    assert storage.download_folder(str(root / "victim"), str(ws3)).skipped == {"link": 1}
    assert (ws3 / where / "planted").is_file() and not os.path.lexists(ws3 / "again")


class FakeOSSBucketMock:
    """Stands in for oss2.Bucket: objects in a dict, listed in pages of two."""

    def __init__(self):
        self.objects: dict[str, bytes] = {}

    def list_objects(self, prefix="", marker="", max_keys=100):
        keys = sorted(k for k in self.objects if k.startswith(prefix) and k > marker)[:2]
        more = len([k for k in self.objects if k.startswith(prefix) and k > marker]) > 2
        return SimpleNamespace(object_list=[SimpleNamespace(key=k) for k in keys],
                               is_truncated=more, next_marker=keys[-1] if keys else "")

    def get_object(self, key):
        return io.BytesIO(self.objects[key])

    def put_object(self, key, data):
        self.objects[key] = data.read()


def test_oss_round_trip_with_a_mock_bucket(tmp_path):
    bucket = FakeOSSBucketMock()
    bucket.objects.update({"store/p/a.txt": b"A", "store/p/sub/": b"", "store/p/sub/b.txt": b"B",
                           "store/p/../../evil": b"x", "store/other/c.txt": b"C"})
    storage = OSSStorage(settings=None, bucket=bucket)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    storage.download_folder("store/p", str(workspace))
    assert (workspace / "a.txt").read_bytes() == b"A"
    assert (workspace / "sub" / "b.txt").read_bytes() == b"B"
    assert not (tmp_path / "evil").exists() and not (workspace / "c.txt").exists()
    (workspace / "new.txt").write_text("N")
    os.symlink("/etc/passwd", workspace / "link")
    os.symlink("/etc", workspace / "dirlink")
    os.mkfifo(workspace / "fifo")
    report = storage.upload_folder(str(workspace), "store/q")
    assert report.skipped == {"link": 2, "fifo": 1}
    assert bucket.objects["store/q/new.txt"] == b"N"
    assert bucket.objects["store/q/sub/b.txt"] == b"B"
    assert not [k for k in bucket.objects if k.startswith(("store/q/link", "store/q/dirlink",
                                                           "store/q/fifo"))]


def test_oss_download_never_writes_through_a_link_in_the_workspace(tmp_path):
    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / "keep").write_text("host file")
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "sub").symlink_to(canary)
    (workspace / "keep").symlink_to(canary / "keep")
    bucket = FakeOSSBucketMock()
    bucket.objects.update({"s/sub/planted": b"x", "s/keep": b"overwritten"})
    OSSStorage(settings=None, bucket=bucket).download_folder("s", str(workspace))
    assert sorted(os.listdir(canary)) == ["keep"] and (canary / "keep").read_text() == "host file"
    assert (workspace / "sub" / "planted").read_bytes() == b"x" and not (workspace / "sub").is_symlink()
    assert (workspace / "keep").read_bytes() == b"overwritten"
