"""python -m benchmarks.mesh [--out DIR] [--seconds S]

The face mesh's cost per face, and what cheaper ways of running it change: every face the default detector finds
in the benchmark's photos (single, sizes, webcam, group) cropped as the service crops it, then run through
`face_landmarks` in onnxruntime (one intra-op thread, as the embedded backend runs it)

- one face per call (what a request with one face costs alone) and in batches of 2 to 16 faces (what the embedded
  backend's batcher makes of several faces of one request, or of concurrent requests): ms per face, and the
  landmarks, pose and presence of each face against one face per call;
- at a smaller input (`SIDES`) where the model can take one: the 192-px crop resized, the mesh scaled back.

Writes mesh.json and mesh.md under --out.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import sys
import time
from pathlib import Path

import cv2
import numpy as np

BATCHES = (1, 2, 4, 8, 16)
SIDES = (160, 128)
ROUNDS = 8


def _session(model: bytes | str):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _with_input_side(path: Path, side: int) -> bytes:
    """The ONNX model with its input declared [N, side, side, 3] and its shapes inferred again."""
    import onnx
    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[1].dim_value = dims[2].dim_value = side
    del model.graph.value_info[:]  # inferred for 192: stale now
    return onnx.shape_inference.infer_shapes(model).SerializeToString()


def outputs_of(session, spec, crops: np.ndarray, batch: int) -> dict[str, np.ndarray]:
    """The outputs of one pass over every crop in calls of `batch` faces."""
    names = list(spec.output_names)
    chunks = [dict(zip(names, session.run(names, {spec.input_name: crops[i:i + batch]})))
              for i in range(0, len(crops), batch)]
    return {name: np.concatenate([c[name] for c in chunks]) for name in names}


def ms_per_face(session, spec, crops: np.ndarray, batches: tuple[int, ...], seconds: float,
                rounds: int = ROUNDS) -> dict[int, float]:
    """CPU ms per face at each batch size (onnxruntime runs a one-thread session in the calling thread, whose CPU
    time is read): `rounds` rounds that each run every size for seconds / rounds in turn, the best round kept (a
    loaded machine slows some rounds, through caches and frequency, never speeds one up)."""
    names = list(spec.output_names)
    best: dict[int, float] = {}
    for _ in range(rounds):
        for batch in batches:
            chunks = [crops[i:i + batch] for i in range(0, len(crops), batch)]
            faces, started, cpu = 0, time.perf_counter(), time.thread_time()
            while not faces or time.perf_counter() - started < seconds / rounds:
                for chunk in chunks:
                    session.run(names, {spec.input_name: chunk})
                    faces += len(chunk)
            ms = (time.thread_time() - cpu) * 1e3 / faces
            best[batch] = min(best.get(batch, ms), ms)
    return best


def compare(model, reference: list, placements: list, widths: list[float]) -> dict:
    """How far `placements` are from `reference`, face by face: landmarks in px and in % of the face's width, pose
    in degrees, presence."""
    landmark_px = [float(np.abs(p.landmarks - r.landmarks).max()) for p, r in zip(placements, reference)]
    relative = [d / w * 100 for d, w in zip(landmark_px, widths)]
    pose = [max(abs(p.yaw - r.yaw), abs(p.pitch - r.pitch), abs(p.roll - r.roll))
            for p, r in zip(placements, reference)]
    presence = [abs(p.presence - r.presence) for p, r in zip(placements, reference)]
    kept = sum((p.presence >= 0.5) == (r.presence >= 0.5) for p, r in zip(placements, reference))
    return {"landmarks_max_px": round(max(landmark_px), 4), "landmarks_max_pct_of_face": round(max(relative), 3),
            "landmarks_mean_pct_of_face": round(float(np.mean(relative)), 3),
            "pose_max_deg": round(max(pose), 4), "presence_max": round(max(presence), 5),
            "same_presence_decision": f"{kept}/{len(reference)}"}


def faces(names: tuple[str, ...]):
    """(crops [N, 192, 192, 3], transforms, face widths, the landmark model, its spec) of every face the default
    detector finds in these workloads' photos."""
    from benchmarks import workload
    from benchmarks.__main__ import face_finder
    from faceserve.models.landmarks import LandmarkModel
    from faceserve.models.repository import Repository
    from faceserve.pipeline import imaging
    from faceserve.settings import Settings

    find, close = face_finder()
    try:
        with tempfile.TemporaryDirectory(prefix="faceserve-mesh-") as directory:
            built = workload.build(Path(directory), find)
            files = sorted({f for name in names if name in built for f in built[name].files})
            images = [imaging.decode(f.read_bytes()) for f in files]
            boxes = [find(image, None) for image in images]
    finally:
        close()
    repository = Repository.load(Settings.from_env().repository)
    model = LandmarkModel(repository.landmarks)
    crops, transforms, widths = [], [], []
    for image, found in zip(images, boxes):
        if found:
            batch, made = model.batch(image, found)
            crops.append(batch)
            transforms += made
            widths += [b[2] - b[0] for b in found]
    return np.concatenate(crops), transforms, widths, model, repository


def measure(seconds: float) -> dict:
    crops, transforms, widths, model, repository = faces(("single", "sizes", "webcam", "group"))
    spec = model.spec
    path = repository.model_file(spec.name)
    session = _session(str(path))
    results = {"faces": len(crops), "rounds": ROUNDS, "batches": [], "smaller_inputs": []}
    one = outputs_of(session, spec, crops, 1)
    reference = model.decode(one, transforms)
    for batch, ms in ms_per_face(session, spec, crops, BATCHES, seconds * len(BATCHES)).items():
        placements = model.decode(outputs_of(session, spec, crops, batch), transforms)
        results["batches"].append({"batch": batch, "ms_per_face": round(ms, 3),
                                   **compare(model, reference, placements, widths)})
    for side in SIDES:
        entry: dict = {"side": side}
        try:
            smaller = _session(_with_input_side(path, side))
            resized = np.stack([cv2.resize(c, (side, side), interpolation=cv2.INTER_AREA) for c in crops])
            outputs = outputs_of(smaller, spec, resized, 1)
            mesh_name = spec.output_names[0]
            if outputs[mesh_name].size != one[mesh_name].size:
                raise ValueError(f"the mesh comes out as {outputs[mesh_name].shape[1:]}, not "
                                 f"{one[mesh_name].shape[1:]}")
            outputs[mesh_name] = outputs[mesh_name] * (spec.width / side)
            entry.update(ms_per_face=round(ms_per_face(smaller, spec, resized, (1,), seconds)[1], 3),
                         **compare(model, reference, model.decode(outputs, transforms), widths))
        except Exception as exc:  # the model's geometry refuses it: that is the finding
            entry["error"] = f"{type(exc).__name__}: {exc}"[:300]
        results["smaller_inputs"].append(entry)
    return results


def markdown(results: dict) -> str:
    lines = [f"# The face mesh per face — {results['date']}", "", f"Command: `{results['command']}`  ",
             f"{results['faces']} faces (every face the default detector finds in the single, sizes, webcam and group "
             f"photos), onnxruntime with one thread: CPU ms per face, the best of {results['rounds']} interleaved "
             "rounds; differences are against one face per call, landmarks as the "
             "largest of the five points' distance.", "",
             "| run | CPU ms per face | landmarks max px | max % of face width | mean % | pose max ° | presence max Δ "
             "| same presence decision |", "|---|---|---|---|---|---|---|---|"]
    for b in results["batches"]:
        lines.append(f"| batch {b['batch']} | {b['ms_per_face']} | {b['landmarks_max_px']} | "
                     f"{b['landmarks_max_pct_of_face']} | {b['landmarks_mean_pct_of_face']} | {b['pose_max_deg']} | "
                     f"{b['presence_max']} | {b['same_presence_decision']} |")
    for s in results["smaller_inputs"]:
        if "error" in s:
            lines.append(f"| input {s['side']}x{s['side']} | refused: {s['error']} | | | | | | |")
        else:
            lines.append(f"| input {s['side']}x{s['side']} (the 192 crop resized) | {s['ms_per_face']} | "
                         f"{s['landmarks_max_px']} | {s['landmarks_max_pct_of_face']} | "
                         f"{s['landmarks_mean_pct_of_face']} | {s['pose_max_deg']} | {s['presence_max']} | "
                         f"{s['same_presence_decision']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import datetime
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mesh", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per batch size")
    args = parser.parse_args(argv)
    results = measure(args.seconds)
    results.update(date=datetime.datetime.now().isoformat(timespec="seconds"),
                   command="python -m benchmarks.mesh " + " ".join(argv))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "mesh.json").write_text(json.dumps(results, indent=2))
    (args.out / "mesh.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
