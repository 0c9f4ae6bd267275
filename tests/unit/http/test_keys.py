"""Key files, the `keys new` command, and the refusal to listen beyond loopback without keys."""

from __future__ import annotations

import pytest

from faceserve.cli import main
from faceserve.http.caller import ADMIN, ANALYZE, ENROL
from faceserve.http.exposure import ExposedWithoutKeys, refuse_keyless_exposure
from faceserve.http.keys import digest, find_key, read_key_file
from faceserve.settings import Settings


def test_keys_new_prints_the_key_once_and_a_line_holding_only_its_digest(capsys, tmp_path):
    keys_file = tmp_path / "keys"
    assert main(["keys", "new", "--id", "ci", "--scopes", "analyze,enrol", "--append", str(keys_file)]) == 0
    lines = capsys.readouterr().out.splitlines()
    key, line = lines[1], lines[3]
    assert key.startswith("fs_") and len(key) > 40 and key not in keys_file.read_text()
    assert line == f"ci analyze,enrol sha256:{digest(key).hex()}" and keys_file.read_text() == line + "\n"
    (entry,) = read_key_file(keys_file)
    assert (entry.id, entry.scopes) == ("ci", frozenset({ANALYZE, ENROL}))
    assert find_key((entry,), key.encode()) == entry


def test_keys_new_refuses_an_unknown_scope(capsys):
    assert main(["keys", "new", "--id", "ci", "--scopes", "analyze,root"]) == 2
    assert "scopes must be some of analyze, enrol, admin" in capsys.readouterr().err


@pytest.mark.parametrize("line, says", [
    ("fs_plain_key_on_its_own", "a key line is"),  # the old format: a plain key
    ("ci analyze fs_plain_key", "sha256:"), ("ci analyze sha256:abc", "64 lower-case hex"),
    ("ci analyze,sudo sha256:" + "0" * 64, "scopes must be"), ("c/i analyze sha256:" + "0" * 64, "key id")])
def test_a_bad_key_line_is_named_by_number_without_its_content(tmp_path, line, says):
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# comment\n\n{line}\n")
    with pytest.raises(ValueError) as refused:
        read_key_file(keys_file)
    assert f"{keys_file}, line 3: " in str(refused.value) and says in str(refused.value)
    assert line.split()[0] not in str(refused.value).split(": ", 1)[1] or len(line.split()) > 1


def test_settings_read_both_sources_and_refuse_duplicates(monkeypatch, tmp_path):
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"admin-1 admin sha256:{digest('a').hex()}\nci analyze,enrol sha256:{digest('c').hex()}\n")
    monkeypatch.setenv("FACESERVE_API_KEYS_FILE", str(keys_file))
    monkeypatch.setenv("FACESERVE_API_KEYS", "legacy")
    monkeypatch.setenv("FACESERVE_ALLOWED_HOSTS", "faceserve.example.com, *.corp.example")
    settings = Settings.from_env()
    assert [(k.id, sorted(k.scopes)) for k in settings.api_keys] == [
        (digest("legacy").hex()[:12], [ADMIN, ANALYZE, ENROL]), ("admin-1", [ADMIN]), ("ci", [ANALYZE, ENROL])]
    assert settings.allowed_hosts == ("faceserve.example.com", "*.corp.example")
    monkeypatch.setenv("FACESERVE_API_KEYS", "a")  # the key of admin-1 again
    with pytest.raises(ValueError, match="configured twice"):
        Settings.from_env()


@pytest.mark.parametrize("host, keys, private, refused", [
    ("0.0.0.0", False, False, True), ("::", False, False, True), ("10.0.0.5", False, False, True),
    ("127.0.0.1", False, False, False), ("::1", False, False, False), ("0.0.0.0", True, False, False),
    ("0.0.0.0", False, True, False), (None, False, False, False)])
def test_a_keyless_service_listens_beyond_loopback_only_when_told_it_is_private(host, keys, private, refused):
    if not refused:
        refuse_keyless_exposure(host, keys, private)
        return
    with pytest.raises(ExposedWithoutKeys) as stopped:
        refuse_keyless_exposure(host, keys, private)
    assert f"refusing to listen on {host} without API keys" in str(stopped.value.code)
    assert "FACESERVE_PRIVATE_DEPLOYMENT=1" in str(stopped.value.code)
