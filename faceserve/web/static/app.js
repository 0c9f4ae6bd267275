// The page: what the service offers (read from its own API), the ways in for photos, and the tabs.

import { ApiError, call, callJson, imageForm, onKeyNeeded } from "./api.js";
import { el, percent, scoreBars } from "./dom.js";
import { resultShell, showAnalysis, showError } from "./faces.js";
import { classifierFields, correctionControl, faceFields, FeedbackSummary } from "./feedback.js";
import { Identities } from "./identities.js";

const $ = (id) => document.getElementById(id);

const page = {
  detector: $("detector"),
  files: $("files"),
  dropZone: $("drop-zone"),
  urlForm: $("url-form"),
  url: $("image-url"),
  status: $("status"),
  results: $("results"),
  cameraStart: $("camera-start"),
  cameraSnap: $("camera-snap"),
  cameraStop: $("camera-stop"),
  video: $("camera-video"),
  cameraError: $("camera-error"),
};

// What the service offers, filled by `boot` from /docs.json, /models and /features.
const offer = { identity: false, urlFetch: false, feedback: false, models: [] };
let identities = null;
let feedback = null;

// ---- the API key: asked for when the service answers 401, kept for this tab only (api.js)

onKeyNeeded((reason) => new Promise((resolve) => {
  const form = $("key-form");
  // A modal dialog (a correction being sent) would leave the prompt unreachable; it opens again if the call fails.
  document.querySelectorAll("dialog[open]").forEach((dialog) => dialog.close());
  $("key-reason").textContent = reason ? `The service refused the key: ${reason}.` : "This service asks for an API key.";
  form.hidden = false;
  $("key-input").value = "";
  $("key-input").focus();
  form.onsubmit = (event) => {
    event.preventDefault();
    form.hidden = true;
    resolve($("key-input").value.trim());
  };
}));

// ---- what the service offers

/** The fields a POST endpoint's request accepts, from the OpenAPI schema (a `$ref` to a component resolved). */
function requestFields(schema, path) {
  const content = schema.paths?.[path]?.post?.requestBody?.content ?? {};
  const fields = new Set();
  for (const { schema: body } of Object.values(content)) {
    const resolved = body?.$ref ? schema.components?.schemas?.[body.$ref.split("/").pop()] : body;
    Object.keys(resolved?.properties ?? {}).forEach((name) => fields.add(name));
  }
  return fields;
}

async function boot() {
  let schema, models, features;
  try {
    [schema, models, features] = await Promise.all([
      callJson("/docs.json", { method: "GET" }), callJson("/models", { json: {} }), callJson("/features", { method: "GET" })]);
  } catch (error) {
    $("boot-error").textContent = `The page could not ask the service what it offers: ${error.message}`;
    $("boot-error").hidden = false;
    return;
  }
  // Identity lights up when the API has both halves: the identities resource and `identify` on analyze.
  offer.identity = Boolean(schema.paths?.["/identities"]) && requestFields(schema, "/analyze").has("identify");
  offer.urlFetch = Boolean(features.url_fetch);
  offer.feedback = ["/feedback", "/feedback/summary", "/feedback/export"].every((path) => schema.paths?.[path]);
  offer.models = models.models;

  page.detector.replaceChildren(...models.detectors.map((name) =>
    el("option", { value: name, selected: name === models.default_detector }, name)));
  page.urlForm.hidden = !offer.urlFetch;
  for (const control of [page.detector, page.files, page.cameraStart]) control.disabled = false;
  setUpClassify(models.models.filter((model) => model.task === "image_classifier"));
  if (offer.identity) {
    $("tab-identities").hidden = false;
    identities = new Identities({ table: $("identities-table"), more: $("identities-more"),
      error: $("identities-error"), names: document.body.appendChild(el("datalist", { id: "identity-names" })) });
    identities.load();
  }
  if (offer.feedback) {
    $("tab-feedback").hidden = false;
    feedback = new FeedbackSummary({ table: $("feedback-table"), total: $("feedback-total"),
      error: $("feedback-error"), refresh: $("feedback-refresh"), download: $("feedback-download"),
      downloaded: $("feedback-downloaded") });
  }
  document.body.dataset.ready = "true";
}

// ---- analysing photos

function analyzeFields() {
  return { detector: page.detector.value, identify: offer.identity ? "true" : undefined };
}

// The service reads the format from the bytes, so a photo whose name or type says otherwise is still sent.
function asImage(file) {
  return file.type.startsWith("image/") ? file : new File([file], file.name || "image", { type: "image/unknown" });
}

/** The photo as the service decoded it: the browser's own decoding, or the service's when the browser cannot. */
async function photoBitmap(image) {
  try {
    return await createImageBitmap(image, { imageOrientation: "from-image" });
  } catch {
    const upright = await call("/rotate", { body: imageForm(image, { degrees: 0, format: "png" }) });
    return createImageBitmap(await upright.blob());
  }
}

/** Each face's "Correct…" control, when the service remembered the answer; face_index is the face's place in the
 * service's answer (the table shows the faces in reading order). */
function corrections(analysis, title) {
  const fields = offer.feedback && analysis.request_id ? faceFields(analysis, offer.models) : [];
  if (!fields.length) return null;
  return (face, number) => correctionControl({ requestId: analysis.request_id, faceIndex: analysis.faces.indexOf(face),
    answer: face, fields, subject: `face ${number}`, heading: `Correct face ${number} of ${title}`,
    onSent: () => feedback.load() });
}

async function show(article, image, analysis) {
  const onEnrol = offer.identity ? (face, name) => identities.enrol(image, face.box, name) : null;
  showAnalysis(article, await photoBitmap(image), analysis,
    { identityOffered: offer.identity, onEnrol, correction: corrections(analysis, article.dataset.title) });
}

async function analyzeImages(images) {
  if (!images.length) return;
  page.results.replaceChildren();
  const shells = images.map(({ title }) => page.results.appendChild(resultShell(title)));
  let failed = 0;
  for (const [index, { image, title }] of images.entries()) {
    page.status.textContent = `Analysing ${title} (${index + 1} of ${images.length})…`;
    const upload = asImage(image);
    try {
      await show(shells[index], upload, await callJson("/analyze", { body: imageForm(upload, analyzeFields()) }));
    } catch (error) {
      failed += 1;
      showError(shells[index], error);
    }
  }
  page.status.textContent = statusLine(images.length, failed);
}

function statusLine(count, failed) {
  if (!failed) return count === 1 ? "1 photo analysed." : `${count} photos analysed.`;
  if (count === 1) return "The photo could not be analysed.";
  return `${count} photos: ${count - failed} analysed, ${failed} could not be.`;
}

async function analyzeUrl(url) {
  page.results.replaceChildren();
  const article = page.results.appendChild(resultShell(url));
  page.status.textContent = `Fetching and analysing ${url}…`;
  try {
    const analysis = await callJson("/analyze", { json: { image_url: url, ...analyzeFields() } });
    // The photo itself, as the service fetched and decoded it (the browser may not reach the URL the service can).
    const upright = await call("/rotate", { json: { image_url: url, degrees: 0, format: "png" } });
    await show(article, new File([await upright.blob()], "photo.png", { type: "image/png" }), analysis);
    page.status.textContent = statusLine(1, 0);
  } catch (error) {
    showError(article, error);
    page.status.textContent = statusLine(1, 1);
  }
}

const named = (files) => [...files].map((file, index) => ({ image: file, title: file.name || `pasted image ${index + 1}` }));

page.files.addEventListener("change", () => {
  analyzeImages(named(page.files.files));
  page.files.value = ""; // the same photo chosen again is analysed again
});
page.urlForm.addEventListener("submit", (event) => {
  event.preventDefault();
  analyzeUrl(page.url.value.trim());
});

// Drag and drop onto the drop zone; a photo dropped elsewhere must not make the browser leave the page.
for (const type of ["dragover", "drop"]) document.addEventListener(type, (event) => event.preventDefault());
page.dropZone.addEventListener("dragover", () => page.dropZone.classList.add("dragging"));
page.dropZone.addEventListener("dragleave", () => page.dropZone.classList.remove("dragging"));
page.dropZone.addEventListener("drop", (event) => {
  page.dropZone.classList.remove("dragging");
  if (!page.files.disabled) analyzeImages(named(event.dataTransfer.files));
});

document.addEventListener("paste", (event) => {
  if (page.files.disabled || event.target.closest?.("input, textarea")) return;
  const files = [...event.clipboardData.items].filter((item) => item.kind === "file").map((item) => item.getAsFile());
  const text = event.clipboardData.getData("text/plain").trim();
  if (files.length) analyzeImages(named(files));
  else if (offer.urlFetch && /^https?:\/\//i.test(text)) analyzeUrl(text);
});

// ---- the camera

let stream = null;

const CAMERA_ERRORS = {
  NotAllowedError: "The browser denied access to the camera. Allow the camera for this site in the browser's settings, or choose a photo instead.",
  SecurityError: "The browser denied access to the camera. Allow the camera for this site in the browser's settings, or choose a photo instead.",
  NotFoundError: "No camera was found on this device.",
  NotReadableError: "The camera is in use by another program.",
};

function cameraShown(on) {
  page.video.hidden = page.cameraSnap.hidden = page.cameraStop.hidden = !on;
  page.cameraStart.hidden = on;
}

page.cameraStart.addEventListener("click", async () => {
  page.cameraError.hidden = true;
  if (!navigator.mediaDevices?.getUserMedia) {
    page.cameraError.textContent = "This browser offers no camera to this page (a camera needs https or localhost).";
    page.cameraError.hidden = false;
    return;
  }
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
  } catch (error) {
    page.cameraError.textContent = CAMERA_ERRORS[error.name] ?? `The camera could not be started: ${error.message}`;
    page.cameraError.hidden = false;
    return;
  }
  page.video.srcObject = stream;
  page.video.hidden = false;
  await page.video.play(); // resolves once frames arrive: a snapshot before that would be empty
  cameraShown(true);
  page.cameraSnap.focus();
});

page.cameraSnap.addEventListener("click", async () => {
  const frame = el("canvas", { width: page.video.videoWidth, height: page.video.videoHeight });
  frame.getContext("2d").drawImage(page.video, 0, 0);
  const blob = await new Promise((resolve) => frame.toBlob(resolve, "image/jpeg", 0.92));
  analyzeImages([{ image: new File([blob], "camera snapshot.jpg", { type: "image/jpeg" }), title: "camera snapshot" }]);
});

page.cameraStop.addEventListener("click", () => {
  stream?.getTracks().forEach((track) => track.stop());
  stream = null;
  page.video.srcObject = null;
  cameraShown(false);
  page.cameraStart.focus();
});

// ---- classify: whole-image classifiers of the repository

function setUpClassify(classifiers) {
  const select = $("classifier");
  const file = $("classify-file");
  const result = $("classify-result");
  if (!classifiers.length) {
    $("classify-none").hidden = false;
    return;
  }
  select.replaceChildren(...classifiers.map((model) => el("option", { value: model.name }, model.name)));
  select.disabled = file.disabled = false;
  file.addEventListener("change", async () => {
    const [image] = file.files;
    if (!image) return;
    result.replaceChildren(el("p", {}, `Classifying ${image.name}…`));
    try {
      const answer = await callJson("/classify", { body: imageForm(asImage(image), { model: select.value, top_k: 5 }) });
      const scores = Object.fromEntries(answer.top_k.map(({ label, score }) => [label, score]));
      const model = classifiers.find(({ name }) => name === answer.model);
      const correction = offer.feedback && answer.request_id && model && answer.top_k[0]
        ? correctionControl({ requestId: answer.request_id, answer: { label: answer.top_k[0].label },
          fields: classifierFields(model), subject: `the top label of ${image.name}`, onSent: () => feedback.load() })
        : null;
      result.replaceChildren(el("article", { className: "card" }, el("h2", {}, image.name),
        el("p", {}, el("strong", { className: "top-label" }, answer.top_k[0]?.label ?? "—"), " ",
          answer.top_k[0] ? percent(answer.top_k[0].score) : "", ` · ${answer.model}`),
        scoreBars(scores, `Top labels for ${image.name}`), correction));
    } catch (error) {
      result.replaceChildren(el("p", { className: "error", role: "alert" }, error instanceof ApiError ? error.message : String(error)));
    }
    file.value = "";
  });
}

// ---- tabs (arrow keys move between them, as in the WAI-ARIA tabs pattern)

const tabs = [...document.querySelectorAll('[role="tab"]')];

function selectTab(tab) {
  for (const other of tabs) {
    const selected = other === tab;
    other.setAttribute("aria-selected", String(selected));
    other.tabIndex = selected ? 0 : -1;
    $(other.getAttribute("aria-controls")).hidden = !selected;
  }
  tab.focus();
  if (tab.id === "tab-feedback") feedback?.load(); // what other clients sent since is shown too
}

for (const tab of tabs) {
  tab.addEventListener("click", () => selectTab(tab));
  tab.addEventListener("keydown", (event) => {
    const visible = tabs.filter((other) => !other.hidden);
    const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
    if (step) selectTab(visible[(visible.indexOf(tab) + step + visible.length) % visible.length]);
  });
}

boot();
