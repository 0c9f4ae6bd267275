"""FaceRes beside face_recognition (dlib's ResNet with its own 5 points and chip) on the calibration set's pairs
(`benchmarks.similarity.fixtures_set`: the identity photos by label; two faces of one group photo, and a group face
and a labelled face, are different people). Each face is located once by faceserve (`Pipeline.locate`, the largest
face of a labelled photo, the faces at the hand boxes of a group photo); face_recognition encodes the same boxes in
its own interpreter (`faceserve.dev.peers`, `peer_side.py`).

    .venv/bin/python benchmarks/results/2026-12-07-peer-calibration/pairs.py > output.txt
"""

import asyncio
import itertools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from benchmarks import similarity  # noqa: E402
from faceserve.dev import peers  # noqa: E402
from faceserve.pipeline.pipeline import largest  # noqa: E402
from faceserve.services import Services  # noqa: E402

FACERES_THRESHOLD, PEER_TOLERANCE, ENROLMENT_BAR_PX = 0.59, 0.6, 40


async def located_faces(calibration_set, folder: Path) -> list[dict]:
    """Every face the calibration draws pairs from: its source, label, photo (saved as .npy), box and FaceRes vector."""
    services = Services.build()
    await services.resources.start()
    pipeline, faces = services.resources.pipeline, []
    for i, (person, _, image) in enumerate(calibration_set.people):
        found = await pipeline.locate(image)
        if found:
            face = largest(found)
            np.save(folder / f"person{i}.npy", image)
            faces.append({"source": "person", "label": person, "npy": str(folder / f"person{i}.npy"),
                          "box": [float(v) for v in face.box], "faceres": (await pipeline.embed(image, [face]))[0]})
    for g, group in enumerate(calibration_set.groups):
        found = await pipeline.locate(group.image)
        kept = similarity._at_hand_boxes(found, group.boxes) if group.boxes else found
        if kept:
            np.save(folder / f"group{g}.npy", group.image)
            for n, (face, vector) in enumerate(zip(kept, await pipeline.embed(group.image, kept))):
                faces.append({"source": f"group{g}", "label": f"{group.name}#{n}", "npy": str(folder / f"group{g}.npy"),
                              "box": [float(v) for v in face.box], "faceres": vector})
    await services.close()
    return faces


def peer_encodings(faces: list[dict]) -> None:
    """Each face's face_recognition encoding, at the same box, from the peer's interpreter."""
    by_photo: dict[str, list[dict]] = {}
    for face in faces:
        by_photo.setdefault(face["npy"], []).append(face)
    request = [{"npy": npy, "boxes": [f["box"] for f in group]} for npy, group in by_photo.items()]
    done = subprocess.run([str(peers.python()), "-I", str(HERE / "peer_side.py")], input=json.dumps(request),
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True)
    for group, encodings in zip(by_photo.values(), json.loads(done.stdout)):
        for face, encoding in zip(group, encodings):
            face["dlib"] = np.array(encoding)


def relation(a: dict, b: dict) -> str | None:
    if a["source"] == b["source"] == "person":
        return "same" if a["label"] == b["label"] else "different"
    if "person" in (a["source"], b["source"]) or a["source"] == b["source"]:
        return "different"  # a stranger and a labelled person, or two faces of one group photo
    return None  # faces of two group photos: no rule says


def report(name: str, same: np.ndarray, different: np.ndarray, threshold: float, higher: bool) -> None:
    def accepted(scores, at):
        return scores >= at if higher else scores <= at
    false_accepts, false_rejects = int(accepted(different, threshold).sum()), int((~accepted(same, threshold)).sum())
    fewest = min((int(accepted(different, t).sum()) + int((~accepted(same, t)).sum()), t)
                 for t in np.unique(np.concatenate([same, different])))
    strictest = same.min() if higher else same.max()  # the strictest threshold that rejects no same-person pair
    print(f"{name}: at {threshold}: FA {false_accepts}/{len(different)} FR {false_rejects}/{len(same)}; "
          f"fewest errors {fewest[0]} at {fewest[1]:.4f}; FA with no FR {int(accepted(different, strictest).sum())}")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="peer-calibration-") as folder:
        faces = asyncio.run(located_faces(similarity.fixtures_set(), Path(folder)))
        peer_encodings(faces)
    pairs = {"same": [], "different": []}
    for a, b in itertools.combinations(faces, 2):
        kind = relation(a, b)
        if kind:
            width = min(a["box"][2] - a["box"][0], b["box"][2] - b["box"][0])
            pairs[kind].append((float(a["faceres"] @ b["faceres"]), float(np.linalg.norm(a["dlib"] - b["dlib"])),
                                width, a["label"], b["label"]))
    same, different = (np.array([p[:2] for p in pairs[k]]) for k in ("same", "different"))
    print("pairs same", len(same), "different", len(different))
    report("faceres cosine", same[:, 0], different[:, 0], FACERES_THRESHOLD, True)
    report("face_recognition distance", same[:, 1], different[:, 1], PEER_TOLERANCE, False)
    for cosine, distance, width, a, b in sorted(p for p in pairs["different"]
                                                if p[0] >= FACERES_THRESHOLD or p[1] <= PEER_TOLERANCE):
        print("  FA", "faceres" if cosine >= FACERES_THRESHOLD else "", "dlib" if distance <= PEER_TOLERANCE else "",
              f"cos {cosine:.3f} dist {distance:.3f} min width {width:.0f}", a, b)
    large = np.array([p[:2] for p in pairs["different"] if p[2] >= ENROLMENT_BAR_PX])
    print(f"different pairs with both faces >= {ENROLMENT_BAR_PX} px:", len(large))
    report(f"faceres (>={ENROLMENT_BAR_PX}px)", same[:, 0], large[:, 0], FACERES_THRESHOLD, True)
    report(f"face_recognition (>={ENROLMENT_BAR_PX}px)", same[:, 1], large[:, 1], PEER_TOLERANCE, False)


if __name__ == "__main__":
    main()
