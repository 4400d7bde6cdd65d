"""Workspace storage: the local folder (real), and OSS against a mock bucket (OSS is a cloud API
that cannot run here; the mock stands for it and says so in its name)."""

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
    for outside in (str(tmp_path / "elsewhere"), str(root / "escape"), "/etc"):
        with pytest.raises(SettingsError, match="outside STORAGE_FOLDER"):
            storage.upload_folder(str(workspace), outside)
        with pytest.raises(SettingsError, match="outside STORAGE_FOLDER"):
            storage.download_folder(outside, str(workspace))


class FakeOSSBucketMock:
    """Stands in for oss2.Bucket: objects in a dict, listed in pages of two."""

    def __init__(self):
        self.objects: dict[str, bytes] = {}

    def list_objects(self, prefix="", marker="", max_keys=100):
        keys = sorted(k for k in self.objects if k.startswith(prefix) and k > marker)[:2]
        more = len([k for k in self.objects if k.startswith(prefix) and k > marker]) > 2
        return SimpleNamespace(object_list=[SimpleNamespace(key=k) for k in keys],
                               is_truncated=more, next_marker=keys[-1] if keys else "")

    def get_object_to_file(self, key, path):
        with open(path, "wb") as f:
            f.write(self.objects[key])

    def put_object_from_file(self, key, path):
        with open(path, "rb") as f:
            self.objects[key] = f.read()


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
    storage.upload_folder(str(workspace), "store/q")
    assert bucket.objects["store/q/new.txt"] == b"N"
    assert bucket.objects["store/q/sub/b.txt"] == b"B"
    assert "store/q/link" not in bucket.objects
