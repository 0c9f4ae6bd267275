"""Settings from FACESERVE_* variables: every limit is configurable (keys: tests/unit/http/test_keys.py)."""

from __future__ import annotations

import dataclasses

import pytest

from faceserve.settings import Limits, Settings


def test_defaults(monkeypatch):
    for name in ("BACKEND", "WORKERS", "API_KEYS", "API_KEYS_FILE", "URL_FETCH"):
        monkeypatch.delenv(f"FACESERVE_{name}", raising=False)
    settings = Settings.from_env()
    assert settings.backend == "onnxruntime" and settings.workers == 2 and settings.api_keys == ()
    assert settings.url_fetch is False and settings.limits == Limits()
    assert settings.repository.name == "model_repository"


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(Limits)])
def test_every_limit_is_read_from_its_variable(monkeypatch, field):
    default = getattr(Limits(), field)
    changed = type(default)(default * 2 if not isinstance(default, bool) else not default)
    monkeypatch.setenv(f"FACESERVE_{field.upper()}", str(changed))
    assert getattr(Settings.from_env().limits, field) == changed


def test_decode_limits_follow_the_limits(monkeypatch):
    monkeypatch.setenv("FACESERVE_MAX_PIXELS", "1000")
    monkeypatch.setenv("FACESERVE_MAX_FRAMES", "3")
    decode = Settings.from_env().limits.decode
    assert (decode.max_pixels, decode.max_frames) == (1000, 3)


@pytest.mark.parametrize("value, enabled", [("1", True), ("true", True), ("on", True), ("0", False), ("no", False)])
def test_url_fetch_switch(monkeypatch, value, enabled):
    monkeypatch.setenv("FACESERVE_URL_FETCH", value)
    monkeypatch.setenv("FACESERVE_URL_ALLOWLIST", "10.0.0.0/8,\nimages.internal")
    settings = Settings.from_env()
    assert settings.url_fetch is enabled and settings.url_allowlist == ("10.0.0.0/8", "images.internal")


def test_the_store_lives_under_the_data_directory_unless_a_url_is_given(monkeypatch, tmp_path):
    for name in ("STORE", "GALLERY"):
        monkeypatch.delenv(f"FACESERVE_{name}", raising=False)
    monkeypatch.setenv("FACESERVE_DATA_DIR", str(tmp_path / "data"))
    assert Settings.from_env().store == f"sqlite:///{tmp_path / 'data' / 'faceserve.db'}"
    monkeypatch.setenv("FACESERVE_GALLERY", "postgresql://db/faceserve")  # issue 12's name for it
    assert Settings.from_env().store == "postgresql://db/faceserve"
    monkeypatch.setenv("FACESERVE_STORE", "postgresql://other/faceserve")
    with pytest.raises(ValueError, match="different stores"):
        Settings.from_env()


def test_the_default_data_directory_is_outside_the_checkout(monkeypatch, tmp_path):
    monkeypatch.delenv("FACESERVE_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert Settings.from_env().data_dir == tmp_path / "faceserve"
