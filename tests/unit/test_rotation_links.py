"""Compressing a rotated log, as root, in a directory the workers' user may write: no link
planted there is followed (the nginx CVE-2016-1247 pattern, on the rotation's side)."""

from __future__ import annotations

import os

import pytest

from pyd.log.compress import compress_file


@pytest.fixture
def victim(tmp_path):
    path = tmp_path / "shadow"
    path.write_text("root's secret\n")
    path.chmod(0o600)
    return path


def rotated(tmp_path, name="pyd.log-20240101-000000"):
    path = tmp_path / name
    path.write_bytes(b"a line\n" * 200)
    path.chmod(0o640)
    return path


@pytest.mark.parametrize("method", ["gzip", "zstd"])
def test_a_link_planted_at_the_temporary_name_is_replaced_not_written_through(tmp_path, victim,
                                                                              method):
    log = rotated(tmp_path)
    suffix = ".gz" if method == "gzip" else ".zst"
    os.symlink(victim, f"{log}{suffix}.tmp")
    dst = compress_file(str(log), method)
    assert victim.read_text() == "root's secret\n" and oct(victim.stat().st_mode)[-3:] == "600"
    assert not os.path.islink(dst) and oct(os.stat(dst).st_mode)[-3:] == "640"
    assert not log.exists()


def test_a_rotated_copy_swapped_for_a_link_is_refused(tmp_path, victim):
    log = tmp_path / "pyd.log-20240101-000001"
    os.symlink(victim, log)
    with pytest.raises(OSError):
        compress_file(str(log), "gzip")
    assert victim.read_text() == "root's secret\n"
    assert not (tmp_path / "pyd.log-20240101-000001.gz").exists()
