"""`python -m faceserve gallery index`: the saved search index built before the workers start, over a temporary SQLite
store of synthetic vectors stored under the repository's serving embedding model, in the folder a worker opening
the gallery reads (beside the store, FACESERVE_INDEX_DIR unset), and a worker starting from it without a build."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from faceserve.gallery import EmbeddingModel, Gallery, NewFace
from faceserve.gallery.index import default_index_dir
from faceserve.models.repository import Repository
from faceserve.store import open_store
from tests.support import ROOT

SHA256 = "cd" * 32


def index_command(repository: Path, *args: str, **env_vars: str) -> subprocess.CompletedProcess:
    env = {name: value for name, value in os.environ.items()
           if name not in ("FACESERVE_STORE", "FACESERVE_GALLERY", "FACESERVE_INDEX_DIR")}
    env.update(FACESERVE_MODEL_REPOSITORY=str(repository), **env_vars)
    result = subprocess.run([sys.executable, "-m", "faceserve", "gallery", "index", *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    result.repository = repository
    return result


def reported(result: subprocess.CompletedProcess) -> dict:
    """The serving model's line: the first of one JSON line per embedding model of the repository."""
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    models = [line["model"].split(":")[0] for line in lines]
    built = Repository.load(result.repository)
    assert models == [built.embedding.name, *(spec.name for spec in built.earlier_embeddings)]
    return lines[0]


def refused(result: subprocess.CompletedProcess, exit_code: int) -> dict:
    assert result.returncode == exit_code and result.stdout == "", result.stderr
    return json.loads(result.stderr.strip().splitlines()[-1])


def counter(store) -> int:
    with store.read() as tx:
        return tx.one("SELECT version FROM store_changes WHERE topic = 'gallery'")[0]


def test_a_store_that_does_not_exist_is_refused_and_nothing_is_made(repository, tmp_path):
    missing = tmp_path / "nowhere" / "faceserve.db"
    error = refused(index_command(repository, "--store", f"sqlite:///{missing}"), 2)
    assert error["error"] == "store_not_found" and str(missing) in error["message"]
    assert list(tmp_path.iterdir()) == []


def test_the_command_builds_what_a_worker_then_starts_from_and_a_second_run_keeps_it(repository, tmp_path,
                                                                                    monkeypatch):
    from faceserve.gallery import ann

    url = f"sqlite:///{tmp_path / 'faceserve.db'}"
    store = open_store(url)
    try:
        first = index_command(repository, "--store", url)
        if first.returncode == 2 and '"no_embedding_model"' in first.stderr:
            pytest.skip("the repository has no embedding model")
        empty = reported(first)  # it names the serving model
        assert (empty["outcome"], empty["faces"], empty["identities"], empty["change"]) == ("exact", 0, 0, 0)
        name, version = empty["model"].split(":")
        model = EmbeddingModel(name, version, empty["dimension"])
        folder = default_index_dir(store) / f"{name}-{version}-{model.dimension}"
        assert empty["folder"] == str(folder) and not folder.exists()

        enrolled = Gallery(store, model)
        vectors = np.random.default_rng(3).standard_normal((240, model.dimension)).astype(np.float32)
        ids = [enrolled.create_identity(f"person {i}", faces=[NewFace(vector, SHA256, (0, 0, 1, 1))]).id
               for i, vector in enumerate(vectors)]
        below = reported(index_command(repository, "--store", url))
        assert (below["outcome"], below["faces"], below["change"], below["exact_below"]) == ("exact", 240, 240, 5000)
        assert not folder.exists()  # below the bound the workers search exactly: nothing built

        built = reported(index_command(repository, "--store", url, "--force"))
        assert (built["outcome"], built["kept"], built["faces"], built["identities"]) == ("built", False, 240, 240)
        assert built["change"] == counter(store) == 240 and built["folder"] == str(folder / "240")
        assert built["model"] == empty["model"] and built["seconds"] >= 0
        manifest = json.loads((folder / "240" / "manifest.json").read_text())
        assert manifest["version"] == counter(store) and manifest["faces"] == 240
        assert manifest["model"] == [name, version, model.dimension]

        real_build, builds = ann.build, []
        monkeypatch.setattr(ann, "build", lambda *args, **kwargs: builds.append(args) or real_build(*args, **kwargs))
        worker = Gallery(store, model, poll_interval_s=0, exact_below=200)  # approximate from 200 faces on
        try:
            assert [matches[0].identity_id for matches in worker.search(vectors[:10], 3)] == ids[:10]
            assert worker.index.saved.folder == folder / "240" and len(worker.index) == 240
            assert not worker.index.building and builds == []
        finally:
            worker.close()

        graph_written = (folder / "240" / ann.GRAPH).stat().st_mtime_ns
        again = reported(index_command(repository, "--store", url))
        assert (again["outcome"], again["kept"], again["change"], again["faces"], again["folder"]) == (
            "current", True, 240, 240, str(folder / "240"))
        assert (folder / "240" / ann.GRAPH).stat().st_mtime_ns == graph_written
        assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == ["240"]

        enrolled.delete_identity(ids[0])
        with open(folder / ".lock", "w") as lock:  # another build of the machine runs: the command waits, then says so
            fcntl.flock(lock, fcntl.LOCK_EX)
            busy = refused(index_command(repository, "--store", url, "--force", "--wait-s", "0.5"), 3)
        assert busy["error"] == "index_busy" and "still builds the index" in busy["message"]
        unwritable = tmp_path / "a-file"
        unwritable.write_text("")
        not_saved = refused(index_command(repository, "--store", url, "--force",
                                          FACESERVE_INDEX_DIR=str(unwritable)), 2)
        assert not_saved["error"] == "index_not_saved" and "FACESERVE_INDEX_DIR" in not_saved["message"]
        assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == ["240"]
        after = reported(index_command(repository, "--store", url, "--force"))
        assert (after["outcome"], after["change"], after["faces"], after["identities"]) == ("built", 241, 239, 239)
        assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == ["241"]
    finally:
        store.close()
