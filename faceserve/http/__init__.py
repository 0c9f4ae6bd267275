"""The HTTP edge: everything between a request's bytes and the pipeline, and the error answers.

- `responses.py`: the one error shape as HTTP answers, and the middleware that applies it to
  BentoML's own errors and enforces the body size limit.
- `middleware.py`: load (concurrency limit with 503 + Retry-After, keep-alive spreading).
- `auth.py`: who may call what: API keys and their scopes (`keys.py`), the route table (`routes.py`), the
  Host allowlist and the cross-site refusals; `caller.py`: the caller it decides; `headers.py`: the security
  headers of every answer; `exposure.py`: no keyless service listening beyond loopback.
- `upload_guard.py` and `framework.py`: no request shape reaches BentoML's URL downloader;
  bounded /metrics labels.
- `inputs.py`: where a request's image bytes come from (upload, base64, URL);
  `urlfetch.py`: fetching a URL without becoming an SSRF proxy.

Not here: decoding the image and everything after it (`faceserve.pipeline`).
"""

# Paths every client may reach: no API key, no concurrency limit, their own /metrics label.
OPEN_PATHS = frozenset({"/readyz", "/livez", "/healthz", "/metrics"})
# What probes ask: exempt from the Host allowlist (they hold no data, and a probe names the service by whatever
# address it has).
HEALTH_PATHS = OPEN_PATHS - {"/metrics"}
