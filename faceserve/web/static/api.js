// Every call the page makes to the service: the API key, and the service's JSON errors as ApiError.

const KEY_STORAGE = "faceserve.apiKey"; // sessionStorage: the key lives as long as this tab, never on disk

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// Set by the page: shows the key prompt and resolves with the key typed. Many calls that are refused at
// once share one prompt.
let promptForKey = async (reason) => { throw new ApiError(401, "unauthorized", reason); };
let pendingPrompt = null;

export function onKeyNeeded(prompt) {
  promptForKey = prompt;
}

function askForKey(reason) {
  pendingPrompt ??= promptForKey(reason).finally(() => { pendingPrompt = null; });
  return pendingPrompt;
}

async function errorOf(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    if (body && typeof body.message === "string") return new ApiError(response.status, body.error, body.message);
  } catch { /* not our JSON shape: a proxy's page, say */ }
  return new ApiError(response.status, "http_" + response.status, text.trim().slice(0, 300) || response.statusText);
}

/** fetch(path) with the key; answers the Response, throws ApiError for any non-2xx answer. */
export async function call(path, { method = "POST", body, json } = {}) {
  for (;;) {
    const key = sessionStorage.getItem(KEY_STORAGE);
    const headers = key ? { "X-API-Key": key } : {};
    if (json !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, { method, headers, body: json !== undefined ? JSON.stringify(json) : body });
    } catch {
      throw new ApiError(0, "network", "the service could not be reached, or it closed the connection");
    }
    if (response.status !== 401) {
      if (!response.ok) throw await errorOf(response);
      return response;
    }
    const refusal = await errorOf(response);
    if (sessionStorage.getItem(KEY_STORAGE) === key) sessionStorage.removeItem(KEY_STORAGE);
    // A first visit gets the plain request for a key; a refused key gets the service's reason.
    const typed = await askForKey(key ? refusal.message : "");
    sessionStorage.setItem(KEY_STORAGE, typed);
  }
}

export async function callJson(path, options) {
  return (await call(path, options)).json();
}

/** A form for one of the service's image endpoints: the image (as `imageField`) and the other fields, strings only. */
export function imageForm(image, fields = {}, imageField = "image") {
  const form = new FormData();
  if (image) form.append(imageField, image, image.name || "image");
  for (const [name, value] of Object.entries(fields)) {
    if (value !== undefined && value !== null) form.append(name, String(value));
  }
  return form;
}
