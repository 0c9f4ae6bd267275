"""The jobs endpoints from a client's side: submit a folder's photos, follow the job, read its results."""

from __future__ import annotations

import mimetypes
import time
from pathlib import Path
from typing import Callable, Iterator

import httpx

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
FINAL_JOB_STATES = ("done", "cancelled")


class JobsError(Exception):
    """The server refused or failed a call; `body` is its error (`error`, `message`)."""

    def __init__(self, body: dict):
        super().__init__(f"{body.get('error')}: {body.get('message')}")
        self.body = body


def photos_in(folder: Path) -> list[Path]:
    """The image files directly in `folder`, by name."""
    return sorted(path for path in folder.iterdir() if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)


class JobsClient:
    def __init__(self, server: str, api_key: str | None = None, timeout_s: float = 300.0):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=server.rstrip("/"), headers=headers, timeout=timeout_s)

    def __enter__(self) -> "JobsClient":
        return self

    def __exit__(self, *exc) -> None:
        self.http.close()

    def submit(self, photos: list[Path], detector: str | None = None, identify: bool = False) -> dict:
        fields = {"identify": str(identify).lower(), **({"detector": detector} if detector else {})}
        files = [("images", (path.name, path.read_bytes(), mimetypes.guess_type(path.name)[0] or "image/*"))
                 for path in photos]
        return self._call("/jobs/submit", data=fields, files=files).json()

    def status(self, job_id: str) -> dict:
        return self._call("/jobs/status", json={"job_id": job_id}).json()

    def wait(self, job_id: str, progress: Callable[[dict], None] = lambda status: None,
             poll_s: float = 0.5) -> dict:
        """Ask for the job's status every `poll_s` until it is finished, telling `progress` each answer."""
        while True:
            status = self.status(job_id)
            progress(status)
            if status["state"] in FINAL_JOB_STATES:
                return status
            time.sleep(poll_s)

    def results(self, job_id: str) -> Iterator[bytes]:
        """The results file's bytes, as they arrive."""
        with self.http.stream("POST", "/jobs/results", json={"job_id": job_id}) as response:
            if not response.is_success:
                response.read()
                raise _error(response)
            yield from response.iter_bytes()

    def _call(self, route: str, **kwargs) -> httpx.Response:
        response = self.http.post(route, **kwargs)
        if not response.is_success:
            raise _error(response)
        return response


def _error(response: httpx.Response) -> JobsError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict) or "error" not in body:
        body = {"error": f"http_{response.status_code}", "message": response.text[:500]}
    return JobsError(body)
