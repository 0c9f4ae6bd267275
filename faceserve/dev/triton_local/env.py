"""The local Triton server's own environment: `<repo>/.triton-env`.

`nvidia-pytriton` bundles `tritonserver` with only the Python backend. Its Python
backend needs numpy < 2 (with numpy 2 it answers with empty tensors), while the
service needs numpy 2 (opencv), so the server gets its own venv, created with the
same CPython as the service, from requirements/triton-local.txt. Idempotent: a stamp
records what was installed; a file lock serialises concurrent creators.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from faceserve.settings import PROJECT_ROOT

log = logging.getLogger(__name__)

REQUIREMENTS = PROJECT_ROOT / "requirements" / "triton-local.txt"
STAMP = ".faceserve-stamp"


@dataclasses.dataclass(frozen=True)
class TritonEnv:
    root: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def server_root(self) -> Path:
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        return self.root / "lib" / version / "site-packages" / "pytriton" / "tritonserver"

    @property
    def tritonserver(self) -> Path:
        return self.server_root / "bin" / "tritonserver"

    @property
    def backend_directory(self) -> Path:
        return self.server_root / "backends"

    def process_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for tritonserver: this venv first on PATH (the Python backend stub
        finds its interpreter, hence numpy < 2, there) and libpython's folder on LD_LIBRARY_PATH."""
        env = dict(os.environ if base is None else base)
        for key in ("VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH"):
            env.pop(key, None)
        env["PATH"] = os.pathsep.join([str(self.root / "bin"), env.get("PATH", "/usr/bin:/bin")])
        libdir = str(Path(sys.base_prefix) / "lib")
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in [libdir, env.get("LD_LIBRARY_PATH", "")] if p)
        return env


def _fingerprint() -> str:
    digest = hashlib.sha256(REQUIREMENTS.read_bytes())
    digest.update(sys.version.encode())
    return digest.hexdigest()


def ensure_env(root: Path | None = None) -> TritonEnv:
    """Create (or reuse) the server's venv and place the Python backend stub; return it."""
    root = Path(os.environ.get("FACESERVE_TRITON_ENV", root or PROJECT_ROOT / ".triton-env"))
    env = TritonEnv(root)
    wanted = _fingerprint()
    stamp = root / STAMP
    if stamp.is_file() and stamp.read_text() == wanted and env.tritonserver.is_file():
        return env
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.is_file() and stamp.read_text() == wanted and env.tritonserver.is_file():
            return env
        interpreter = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
        log.info("creating the local Triton environment in %s with %s", root, interpreter)
        subprocess.run([str(interpreter), "-m", "venv", str(root)], check=True)
        subprocess.run([str(env.python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "-r", str(REQUIREMENTS)], check=True)
        place_stub(env)
        stamp.write_text(wanted)
    return env


def place_stub(env: TritonEnv) -> None:
    """The Python backend loads `triton_python_backend_stub` from its own folder; pytriton
    ships one per Python version beside it."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = env.server_root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise FileNotFoundError(f"nvidia-pytriton has no Python backend stub for Python {version} ({stub})")
    target = env.backend_directory / "python" / stub.name
    shutil.copy2(stub, target)
    target.chmod(0o755)
