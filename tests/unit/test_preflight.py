"""The image's start-up check (faceserve.preflight): a bad configuration is one sentence and exit status 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from faceserve import preflight
from tests.support import ROOT


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    for name in [n for n in os.environ if n.startswith("FACESERVE_")]:
        monkeypatch.delenv(name)
    folder = tmp_path / "data"
    folder.mkdir()
    monkeypatch.setenv("FACESERVE_DATA_DIR", str(folder))
    return folder


def test_a_store_on_a_mounted_volume_passes(data_dir):
    settings = preflight.check(mounts={Path("/"), data_dir})
    assert settings.store == f"sqlite:///{data_dir / 'faceserve.db'}"


def test_a_store_below_a_mounted_volume_passes(data_dir):
    preflight.check(mounts={Path("/"), data_dir.parent})


def test_a_store_outside_every_volume_is_refused(data_dir):
    with pytest.raises(preflight.ConfigurationError, match=f"not on a mounted volume.*-v faceserve-data:{data_dir}"):
        preflight.check(mounts={Path("/"), Path("/proc")})


def test_a_missing_data_folder_is_refused(data_dir):
    data_dir.rmdir()
    with pytest.raises(preflight.ConfigurationError, match="does not exist"):
        preflight.check(mounts={Path("/"), data_dir})


@pytest.mark.skipif(os.getuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_store_is_refused(data_dir):
    data_dir.chmod(0o500)
    with pytest.raises(preflight.ConfigurationError, match="not writable by uid"):
        preflight.check(mounts={Path("/"), data_dir})


def test_a_postgresql_store_needs_no_volume(data_dir, monkeypatch):
    monkeypatch.setenv("FACESERVE_STORE", "postgresql://faceserve@db/faceserve")
    assert preflight.check(mounts={Path("/")}).store.startswith("postgresql://")


def test_a_missing_key_file_is_refused(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FACESERVE_API_KEYS_FILE", str(tmp_path / "absent"))
    with pytest.raises(preflight.ConfigurationError, match="configuration cannot be read.*absent"):
        preflight.check(mounts={Path("/"), data_dir})


def test_mount_points_reads_mountinfo_with_escapes(tmp_path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text("22 1 0:21 / / rw - overlay overlay rw\n"
                         "30 22 8:1 /volumes/x /my\\040data rw - ext4 /dev/vda rw\n")
    assert preflight.mount_points(mountinfo) == {Path("/"), Path("/my data")}


def test_a_refused_start_exits_2_without_starting_the_entrypoint(data_dir, tmp_path):
    marker = tmp_path / "started"
    done = subprocess.run([sys.executable, "-m", "faceserve.preflight", "/bin/touch", str(marker)], cwd=ROOT,
                          env={**os.environ, "FACESERVE_API_KEYS_FILE": str(tmp_path / "absent")},
                          capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith("faceserve: not started: the configuration cannot be read: ")
    assert not marker.exists()
