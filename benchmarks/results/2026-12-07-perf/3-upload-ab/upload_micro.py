"""Per upload: BentoML's image Path (temporary file written, read back, its folder removed) against ImageUpload.

    PYTHONPATH=. .venv/bin/python benchmarks/results/2026-12-07-perf/3-upload-ab/upload_micro.py PHOTO.jpg

(measured with the benchmark's single-astronaut-0.jpg, 65944 bytes: {'bentoml Path': 0.108, 'ImageUpload': 0.007})
"""
import io
import sys
import time
from pathlib import Path
from typing import Annotated

import pydantic
from _bentoml_sdk.io_models import IOMixin
from bentoml.validators import ContentType
from starlette.datastructures import Headers, UploadFile

from faceserve.http.inputs import ImageUpload

data = Path(sys.argv[1]).read_bytes()

class Framework(IOMixin, pydantic.BaseModel):
    image: Annotated[Path, ContentType("image/*")] = None

class Ours(IOMixin, pydantic.BaseModel):
    image: ImageUpload = None

def upload():
    return UploadFile(io.BytesIO(data), filename="a.jpg", headers=Headers({"content-type": "image/jpeg"}))

def framework():
    from bentoml._internal.context import _request_var, request_tempdir_pool
    from starlette.requests import Request
    request = Request({"type": "http", "headers": []})
    token = _request_var.set(request)  # as BentoML's in_request: a temp folder per request, released after
    try:
        Framework.model_validate({"image": upload()}).image.read_bytes()
    finally:
        request_tempdir_pool.release(request.state.temp_dir)
        _request_var.reset(token)

def ours():
    Ours.model_validate({"image": upload()}).image.read_bytes()

best = {}
for _ in range(10):
    for name, run in (("bentoml Path", framework), ("ImageUpload", ours)):
        t = time.thread_time()
        for _ in range(200):
            run()
        ms = (time.thread_time() - t) * 1e3 / 200
        best[name] = min(best.get(name, ms), ms)
print({k: round(v, 3) for k, v in best.items()}, f"{len(data)} bytes")
