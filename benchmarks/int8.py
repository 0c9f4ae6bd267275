"""Float against INT8, per model of the built repository: ms per call at batch 1 and 16 (one process, one intra-op
thread as the service runs them, calls taking turns) and the parity figures `convert quantize` judges. Nothing is
written to the repository. The table of docs/models.md ("INT8 versions").

    python -m benchmarks.int8                 # every ONNX model
    python -m benchmarks.int8 emotion age     # these
"""

from __future__ import annotations

import json
import sys

import numpy as np

from convert import quantize
from convert.__main__ import DEFAULT_REPOSITORY
from faceserve.models import tasks
from faceserve.dev import photos
from faceserve.models.decoder import decoder_for
from faceserve.models.repository import load_spec, model_dirs, model_file


def _timed_batches(spec) -> list[np.ndarray]:
    if spec.task == tasks.DETECTOR:  # one image a call, as its detector first gives it (FaceBoxes: the coarse pass)
        return [decoder_for(spec).model_inputs(spec, photos.astronaut())[0]]
    if spec.task == tasks.CLASSIFIER:
        inputs = quantize.calibration_inputs(spec)
        return [inputs[0], np.concatenate(inputs * 4)[:16]]
    rows, _ = quantize.evaluation_rows(spec)
    return [rows[:1], rows[:16]]


def row(name: str) -> str:
    spec = load_spec(DEFAULT_REPOSITORY / name)
    float_onnx = model_file(DEFAULT_REPOSITORY / name).read_bytes()
    outcome = quantize.quantize(spec, float_onnx)
    timed = quantize.ms_per_batch(spec, {"float": float_onnx, "int8": outcome.onnx_bytes}, _timed_batches(spec),
                                  seconds=0.5)
    before, after = timed["float"], timed["int8"]
    cells = " | ".join(f"{before[b]:.2f} → {after[b]:.2f} ({before[b] / after[b]:.2f}×)" if b in before else "—"
                       for b in (1, 16))
    verdict = "within budget" if not outcome.problems else "refused: " + "; ".join(outcome.problems)
    return f"| {name} | {cells} | {json.dumps(outcome.figures)} | {verdict} |"


def main(names: list[str]) -> None:
    names = names or [d.name for d in model_dirs(DEFAULT_REPOSITORY)]
    print("| model | ms per call, float → INT8, batch 1 | batch 16 | parity figures | budget |")
    print("|---|---|---|---|---|")
    for name in names:
        print(row(name), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
