"""Settings from FACESERVE_* variables: every limit is configurable (keys: tests/unit/http/test_keys.py)."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from faceserve.pipeline.imaging import DecodeLimits
from faceserve.pipeline.quality import EnrolmentBars
from faceserve.settings import Limits, Settings, configured_store
from tests.support import ROOT

# The modules that read FACESERVE_* variables from the environment, one per program: Settings for the service,
# and each other program its own knobs.
ENVIRONMENT_READERS = {
    "faceserve/settings.py": "the service",
    "faceserve/cli.py": "the CLI as a client of a running service (FACESERVE_API_KEY, the key it sends)",
    "faceserve/dev/fixtures.py": "the development tools: where the shared fixtures are (FACESERVE_FIXTURES)",
    "faceserve/dev/triton_local/env.py": "the local Triton's own environment (FACESERVE_TRITON_ENV)",
}


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


def test_the_decode_limits_defaults_are_the_decoders():
    assert Limits().decode == DecodeLimits()


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
    assert configured_store() is None
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


def _reads_faceserve_variables(path: Path) -> bool:
    """Whether the module reads a FACESERVE_* variable from os.environ (get, [], getenv), the name given as a
    literal, an f-string or a module-level constant."""
    tree = ast.parse(path.read_text())
    constants = {target.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
                 and isinstance(node.value, ast.Constant) for target in node.targets if isinstance(target, ast.Name)}

    def names_a_variable(node: ast.AST) -> bool:
        if isinstance(node, ast.JoinedStr) and node.values:
            node = node.values[0]
        if isinstance(node, ast.Name):
            return str(constants.get(node.id, "")).startswith("FACESERVE_")
        return isinstance(node, ast.Constant) and str(node.value).startswith("FACESERVE_")

    def is_environ(node: ast.AST) -> bool:
        return isinstance(node, ast.Attribute) and node.attr == "environ"

    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and is_environ(node.value) and names_a_variable(node.slice):
            return True
        if isinstance(node, ast.Call) and node.args and isinstance(node.func, ast.Attribute) and (
                (node.func.attr == "get" and is_environ(node.func.value)) or node.func.attr == "getenv"):
            if names_a_variable(node.args[0]):
                return True
    return False


def test_settings_is_the_only_reader_of_the_services_variables():
    readers = {path.relative_to(ROOT).as_posix() for path in sorted((ROOT / "faceserve").rglob("*.py"))
               if _reads_faceserve_variables(path)}
    assert readers == set(ENVIRONMENT_READERS)


def test_the_enrolment_bars_are_read_from_their_variables(monkeypatch):
    monkeypatch.setenv("FACESERVE_ENROL_MIN_FACE_PX", "64")
    monkeypatch.setenv("FACESERVE_ENROL_MIN_SHARPNESS", "150.5")
    monkeypatch.setenv("FACESERVE_ENROL_MAX_TURN_DEGREES", "20")
    assert Settings.from_env().enrolment_bars == EnrolmentBars(min_face_px=64, min_sharpness=150.5,
                                                                max_turn_degrees=20)
