"""The workspace images' template copy (backends/workspace_quota.py), on plain files: no root,
no loop device."""

import os

from backends import workspace_quota


def test_an_image_is_copied_as_its_data_only(tmp_path):
    source, target = tmp_path / "template", tmp_path / "copy.img"
    with open(source, "wb") as f:
        f.truncate(1 << 30)  # 1 GiB, all hole...
        for offset in (0, 300 << 20, (1 << 30) - 4096):  # ...but three blocks of data
            f.seek(offset)
            f.write(os.urandom(4096))
    assert workspace_quota._copy_data(str(source), str(target))
    assert os.path.getsize(target) == 1 << 30
    assert os.stat(target).st_blocks * 512 < 1 << 20  # still sparse
    with open(source, "rb") as a, open(target, "rb") as b:
        for offset in (0, 300 << 20, (1 << 30) - 4096, 500 << 20):
            a.seek(offset)
            b.seek(offset)
            assert a.read(4096) == b.read(4096)


def test_a_file_system_that_cannot_seek_holes_falls_back(tmp_path, monkeypatch):
    """Where every byte reads as data, copying would write the whole image: mkfs instead."""
    source, target = tmp_path / "template", tmp_path / "copy.img"
    with open(source, "wb") as f:
        f.truncate(128 << 20)
    real_lseek = os.lseek

    def no_holes(fd, pos, how):
        if how == os.SEEK_HOLE:
            return os.fstat(fd).st_size
        if how == os.SEEK_DATA:
            return pos
        return real_lseek(fd, pos, how)

    monkeypatch.setattr(workspace_quota.os, "lseek", no_holes)
    assert not workspace_quota._copy_data(str(source), str(target))
    assert not target.exists()
