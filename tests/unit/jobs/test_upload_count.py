"""A job of too many uploads is the documented 422 `job_images` (issue 20, finding 14): the framework's multipart
parser refuses more than 1000 files with a bare 400 before the endpoint runs, so the upload guard counts the files
of `/jobs/submit` first and asks the job limits. Run through the guard as an ASGI app, no server."""

from __future__ import annotations

import httpx
import pytest

from faceserve.http.upload_guard import FRAMEWORK_MAX_FILES, UploadGuardMiddleware
from faceserve.jobs import JobLimits
from faceserve.settings import JOBS_SUBMIT_ROUTE
from tests.support import post_through


def multipart(files: int, field: str = "images") -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://testserver/", files=[(field, (f"{i}.jpg", b"x", "image/jpeg"))
                                                                 for i in range(files)])
    return request.read(), request.headers["content-type"]


def guarded(path: str, files: int, limits: JobLimits) -> tuple[int, dict | None]:
    """The guard's answer (status, JSON body), or (0, None) when it let the request through to the app."""
    body, content_type = multipart(files)
    answer = post_through(lambda app: UploadGuardMiddleware(app, file_fields=("images", "archive"),
                                                            file_counts={JOBS_SUBMIT_ROUTE: limits.check_images}),
                          path, [(b"content-type", content_type.encode())], [body])
    if answer.reached:
        assert answer.reached == [body] and answer.status is None  # the app is given the very same bytes
        return 0, None
    return answer.status, answer.body


@pytest.mark.parametrize("files, max_images", [(1001, 1000), (1500, 1000), (11, 10)])
def test_too_many_uploads_for_a_job_is_job_images(files, max_images):
    status, body = guarded(JOBS_SUBMIT_ROUTE, files, JobLimits(max_images=max_images))
    assert (status, body["error"]) == (422, "job_images")
    assert body["message"] == f"{files} images; the limit is {max_images} images per job"


def test_as_many_uploads_as_the_job_allows_pass():
    assert guarded(JOBS_SUBMIT_ROUTE, 1000, JobLimits(max_images=1000)) == (0, None)


def test_past_the_frameworks_own_limit_any_route_is_a_422_naming_it():
    """A job limit above the framework's: uploads beyond the framework's count are refused by name (a zip or URLs
    carry more); any other route likewise, instead of the framework's bare 400."""
    status, body = guarded(JOBS_SUBMIT_ROUTE, FRAMEWORK_MAX_FILES + 1, JobLimits(max_images=5000))
    assert (status, body["error"]) == (422, "too_many_files")
    assert body["message"] == f"{FRAMEWORK_MAX_FILES + 1} files in one request; at most {FRAMEWORK_MAX_FILES}"
    status, body = guarded("/analyze_batch", FRAMEWORK_MAX_FILES + 1, JobLimits())
    assert (status, body["error"]) == (422, "too_many_files")
    assert guarded("/analyze_batch", FRAMEWORK_MAX_FILES, JobLimits()) == (0, None)
