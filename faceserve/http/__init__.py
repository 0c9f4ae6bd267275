"""The HTTP edge: everything between a request's bytes and the pipeline, and the error answers.

- `responses.py`: the one error shape as HTTP answers, and the middleware that applies it to
  BentoML's own errors and enforces the body size limit.
- `middleware.py`: load (concurrency limit with 503 + Retry-After, keep-alive spreading).
- `auth.py`: API keys (`is_public` below: what needs none).
- `upload_guard.py` and `framework.py`: no request shape reaches BentoML's URL downloader;
  bounded /metrics labels.
- `inputs.py`: where a request's image bytes come from (upload, base64, URL);
  `urlfetch.py`: fetching a URL without becoming an SSRF proxy.

Not here: decoding the image and everything after it (`faceserve.pipeline`).
"""

# Paths every client may reach: no API key, no concurrency limit, their own /metrics label.
OPEN_PATHS = frozenset({"/readyz", "/livez", "/healthz", "/metrics"})
# The web page and its files (faceserve/web): they hold no data, and the page must load to ask for a key.
PAGE_PATHS = frozenset({"/"})
PAGE_PREFIX = "/web/"


def is_public(path: str) -> bool:
    """Reachable without an API key: health, metrics and the web page's own files."""
    return (path in OPEN_PATHS or path in PAGE_PATHS
            or (path.startswith(PAGE_PREFIX) and ".." not in path))  # no climbing out of the page's folder
