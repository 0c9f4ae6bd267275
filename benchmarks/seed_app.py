"""The seeds' design, rebuilt for comparison: Flask, OpenCV Haar detection, Keras/TF `predict` per face.

The form field `detector` names another way of finding the faces: absent, the seeds' own Haar cascade; a faceserve
detector's name (the benchmark sends the service's default), that detector's boxes, found synchronously in the
request's thread (benchmarks/seed_boxes.py), so that beside the service only the serving design differs.

Same original artifacts as the model repository was converted from (convert/manifest.toml):
the fer emotion .hdf5 and the SSR-Net gender/age SavedModels. Crops follow each model's recipe
through faceserve.models.crops so only the serving design differs, not the answers.
Served by `gunicorn benchmarks.seed_app:app` (benchmarks.servers.seed_gunicorn).
"""

from __future__ import annotations

import tomllib

import numpy as np
from flask import Flask, jsonify, request

from benchmarks.seed_boxes import FaceserveBoxes
from faceserve.errors import FaceserveError
from faceserve.models import crops
from faceserve.models.detectors import HaarDetector
from faceserve.models.repository import Repository
from faceserve.pipeline import imaging
from faceserve.settings import PROJECT_ROOT as ROOT, Settings


def _load_models():
    import keras
    import tensorflow as tf
    from convert.artifacts import resolve

    manifest = {m["name"]: m for m in tomllib.loads((ROOT / "convert" / "manifest.toml").read_text())["model"]}
    specs = Repository.load(Settings.from_env().repository).heads
    models = {}
    for task, spec in specs.items():
        entry = manifest[spec.name]
        path = resolve(entry["source"], entry["sha256"])
        if entry["format"] == "keras":
            model = keras.models.load_model(path, compile=False)
            models[task] = (spec, lambda x, m=model: m.predict(x, verbose=0))
        else:
            signature = tf.saved_model.load(str(path)).signatures["serving_default"]
            (arg, _), = signature.structured_input_signature[1].items()
            key = sorted(signature.structured_outputs)[0]
            models[task] = (spec, lambda x, s=signature, a=arg, k=key: s(**{a: tf.constant(x)})[k].numpy())
    return models


app = Flask(__name__)
MODELS = _load_models()
HAAR = HaarDetector()
FACESERVE = FaceserveBoxes()


@app.errorhandler(FaceserveError)
def refused(error: FaceserveError):
    return jsonify(error.body()), error.status


@app.get("/readyz")
def readyz():
    return "ok"


@app.post("/analyze")
def analyze():
    image = imaging.decode(request.files["image"].read())
    detector = request.form.get("detector")
    detections = HAAR.detect_sync(image) if detector is None else FACESERVE.detect(image, detector)
    faces = []
    for detection in detections:
        face = {"box": [float(v) for v in detection.box], "score": float(detection.score)}
        for task, (spec, predict) in MODELS.items():  # one predict call per face per model, as the seeds did
            out = np.asarray(predict(crops.face_batch(image, [detection.box], spec)))[0]
            face[task] = out.tolist()
        faces.append(face)
    return jsonify({"detector": detector or "haar", "faces": faces})  # the load generator checks the echo
