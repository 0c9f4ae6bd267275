// Feedback: a correction of an answer the service gave (/feedback), and the Feedback tab (/feedback/summary, the
// CSV of /feedback/export). What can be corrected follows from the service: a face head with labels offers its
// labels (from /models, never listed here), a head without labels a number, identity a name; a classifier its labels.

import { call, callJson } from "./api.js";
import { el } from "./dom.js";

// The model roles that answer no per-face field (faceserve/models/repository.py, `is_head`).
const NOT_HEADS = new Set(["face_detector", "image_classifier", "landmarks", "embedding"]);
const EMBEDDING = "embedding";

const modelName = (reference) => reference.slice(0, reference.lastIndexOf(":")); // "emotion:1" -> "emotion"
const capitalised = (text) => text.charAt(0).toUpperCase() + text.slice(1);

/** Python's `f"{x:.1f}"`: toFixed rounds an exact tie (x.25, x.75) up, Python to the even digit. */
function oneDecimal(x) {
  if (Number.isInteger(x * 4) && !Number.isInteger(x * 2)) {
    const below = Math.floor(x * 10);
    return ((below % 2 === 0 ? below : below + 1) / 10).toFixed(1);
  }
  return x.toFixed(1);
}

/** What the model said for a field, as the service remembered it (faceserve/runtime.py, `_said`). */
export function said(value) {
  if (value === undefined || value === null) return "unknown";
  if (typeof value.label === "string") return value.label;
  if (typeof value.name === "string") return value.name;
  if (typeof value === "number") return oneDecimal(value);
  return String(value);
}

/** The fields of an analysis a person can correct: each face head's, and identity when the faces were identified. */
export function faceFields(analysis, models) {
  const fields = [];
  for (const [task, reference] of Object.entries(analysis.models ?? {})) {
    const model = models.find((candidate) => candidate.name === modelName(reference));
    if (!model) continue;
    if (model.task === EMBEDDING) {
      fields.push({ field: "identity", title: "Identity", kind: "name" });
    } else if (!NOT_HEADS.has(model.task)) {
      fields.push(model.labels.length
        ? { field: task, title: capitalised(task.replaceAll("_", " ")), kind: "label", labels: model.labels }
        : { field: task, title: capitalised(task.replaceAll("_", " ")), kind: "number", units: model.units });
    }
  }
  return fields;
}

/** The one field of a classifier's answer: its top label. */
export function classifierFields(model) {
  return [{ field: "label", title: "Top label", kind: "label", labels: model.labels }];
}

let controls = 0; // unique ids for the labels and the dialog headings

/** The input for the right answer of `field`, given what the model said. */
function rightAnswerInput(id, field, modelSaid) {
  if (field.kind === "label") {
    return el("select", { id, required: true },
      el("option", { value: "" }, "Choose…"),
      field.labels.filter((label) => label !== modelSaid).map((label) => el("option", { value: label }, label)));
  }
  if (field.kind === "number") {
    return el("input", { id, type: "number", min: 0, step: "any", inputmode: "decimal", required: true,
      placeholder: field.units || null });
  }
  return el("input", { id, type: "text", required: true, list: "identity-names", autocomplete: "off" });
}

/**
 * A "Correct…" button and the dialog it opens, for one answer: `answer` holds each field's value (a face, or
 * `{label}` for a classifier), `faceIndex` is its index in the service's answer (null: a whole-image answer).
 * `subject` names it for the button ("face 2"), `heading` for the dialog. Sent corrections are listed under the
 * button; `onSent(record)` follows each.
 */
export function correctionControl({ requestId, faceIndex = null, answer, fields, subject, heading = `Correct ${subject}`,
  onSent = () => {} }) {
  const id = `correction-${++controls}`;
  const toggle = el("button", { type: "button", className: "secondary", "aria-haspopup": "dialog",
    "aria-label": `Correct ${subject}` }, "Correct…");
  const fieldSelect = el("select", { id: `${id}-field` }, fields.map(({ field, title }) =>
    el("option", { value: field }, `${title} (said ${said(answer[field])})`)));
  const rightLabel = el("label", { for: `${id}-right` }, "Right answer");
  let right = null;
  const rightSlot = el("div", { className: "field" }, rightLabel);
  const comment = el("textarea", { id: `${id}-comment`, rows: 3, maxlength: 2000 });
  const send = el("button", { type: "submit" }, "Send correction");
  const cancel = el("button", { type: "button", className: "secondary" }, "Cancel");
  const failure = el("p", { className: "error", role: "alert", hidden: true });
  const form = el("form", {},
    el("div", { className: "field" }, el("label", { for: `${id}-field` }, "Answer to correct"), fieldSelect),
    rightSlot,
    el("div", { className: "field" }, el("label", { for: `${id}-comment` }, "Comment (optional)"), comment),
    failure,
    el("div", { className: "row" }, send, cancel));
  const dialog = el("dialog", { className: "correction-dialog", "aria-labelledby": `${id}-heading` },
    el("h2", { id: `${id}-heading` }, heading), form);
  const sent = el("div", { className: "sent", role: "status", hidden: true });

  const chosen = () => fields.find(({ field }) => field === fieldSelect.value);
  const showRightInput = () => {
    const field = chosen();
    right?.remove();
    right = rightAnswerInput(`${id}-right`, field, said(answer[field.field]));
    rightLabel.textContent = field.kind === "number" && field.units ? `Right ${field.field} (${field.units})` : "Right answer";
    rightSlot.append(right);
  };
  showRightInput();
  fieldSelect.addEventListener("change", showRightInput);
  toggle.addEventListener("click", () => {
    failure.hidden = true;
    dialog.showModal(); // Escape closes it (the browser's own `cancel`)
    (fields.length > 1 ? fieldSelect : right).focus();
  });
  cancel.addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => { // back to the button, unless the page moved on (the API key prompt)
    if (document.activeElement === document.body || dialog.contains(document.activeElement)) toggle.focus();
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const field = chosen();
    const body = { request_id: requestId, field: field.field, model_said: said(answer[field.field]),
      correct: right.value.trim(), comment: comment.value.trim() || undefined };
    if (faceIndex !== null) body.face_index = faceIndex;
    send.disabled = true;
    failure.hidden = true;
    try {
      const record = await callJson("/feedback", { json: body });
      sent.append(el("p", {}, `Correction sent: ${record.field} ${record.model_said} → ${record.correct}`
        + (record.comment ? ` (“${record.comment}”)` : "")));
      sent.hidden = false;
      comment.value = "";
      showRightInput();
      dialog.close();
      onSent(record);
    } catch (error) {
      failure.textContent = `The correction was not stored: ${error.message}`;
      failure.hidden = false;
      if (!dialog.open) dialog.showModal(); // closed while the page asked for an API key
    } finally {
      send.disabled = false;
    }
  });
  return el("div", { className: "correction" }, toggle, dialog, sent);
}

/** The Feedback tab: per field, how many corrections and the most frequent confusions; the CSV export. */
export class FeedbackSummary {
  constructor({ table, total, error, refresh, download, downloaded }) {
    Object.assign(this, { table, total, error, downloaded });
    refresh.addEventListener("click", () => this.load());
    download.addEventListener("click", () => this.download());
  }

  async load() {
    try {
      this.render(await callJson("/feedback/summary", { json: {} }));
      this.error.hidden = true;
    } catch (error) {
      this.error.textContent = `The summary of corrections could not be read: ${error.message}`;
      this.error.hidden = false;
    }
  }

  render(summary) {
    this.total.textContent = summary.total === 1 ? "1 correction in all." : `${summary.total} corrections in all.`;
    const body = this.table.tBodies[0];
    body.replaceChildren(...summary.fields.map(({ field, count, confusions }) => el("tr", {},
      el("th", { scope: "row" }, field),
      el("td", {}, String(count)),
      el("td", {}, el("ul", { className: "confusions" }, confusions.map(({ model_said: modelSaid, correct, count: times }) =>
        el("li", {}, `${modelSaid} → ${correct} `, el("span", { className: "hint" }, `(${times}×)`))))))));
    if (!summary.fields.length) body.append(el("tr", {}, el("td", { colspan: 3 }, "No corrections yet.")));
  }

  /** Every correction as the service exports it (CSV), saved by the browser under the service's file name. */
  async download() {
    this.error.hidden = true;
    this.downloaded.textContent = "";
    try {
      const response = await call("/feedback/export");
      const disposition = response.headers.get("Content-Disposition") ?? "";
      const name = /filename="([^"]+)"/.exec(disposition)?.[1] ?? "faceserve-feedback.csv";
      const blob = await response.blob();
      const url = URL.createObjectURL(blob);
      const link = document.body.appendChild(el("a", { href: url, download: name, hidden: true }));
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000); // a download still starting must find it
      this.downloaded.textContent = `Saved ${name} (${blob.size} bytes).`;
    } catch (error) {
      this.error.textContent = `The corrections could not be downloaded: ${error.message}`;
      this.error.hidden = false;
    }
  }
}
