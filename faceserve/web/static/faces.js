// One analysed photo as a person sees it: the photo with its faces boxed, a table of faces, timings.
// Hovering or focusing a row highlights its box; hovering a box highlights its row, clicking it selects the row.

import { el, percent, scoreBars } from "./dom.js";
import { drawFaces, faceAt, photoPoint } from "./draw.js";

// Fields with a column of their own; any other head's answer gets a generic column.
const KNOWN_FIELDS = new Set(["box", "score", "emotion", "gender", "age", "identity", "landmarks", "pose", "quality"]);

const degrees = (value) => `${Math.round(value)}°`;

/** Short measures one to a line: a narrow column however many there are. */
function measures(items) {
  return el("ul", { className: "measures" }, items.filter(Boolean).map((item) => el("li", {}, item)));
}

/** How usable the face is, then where it looks: one narrow column, so that the table fits beside the photo in a
 * 1280-px window. */
function qualityCell(face) {
  const { quality, pose, landmarks } = face;
  return measures([
    quality && `${Math.round(quality.size)} px`, quality && `sharpness ${Math.round(quality.sharpness)}`,
    typeof quality?.turn === "number" && `turned ${degrees(quality.turn)}`,
    typeof quality?.presence === "number" && `presence ${percent(quality.presence)}`,
    `detection ${percent(face.score)}`,
    pose && `yaw ${degrees(pose.yaw)}`, pose && `pitch ${degrees(pose.pitch)}`, pose && `roll ${degrees(pose.roll)}`,
    landmarks && `${landmarks.length} points`]);
}

function labelCell(answer, what) {
  if (!answer) return "—";
  return el("div", {}, el("strong", { className: "top-label" }, answer.label), " ", percent(answer.score),
    answer.scores ? scoreBars(answer.scores, what) : null);
}

function genericCell(value) {
  if (value === undefined || value === null) return "—";
  if (typeof value === "number") return value.toFixed(value >= 10 ? 0 : 2);
  if (typeof value.label === "string") return `${value.label} ${typeof value.score === "number" ? percent(value.score) : ""}`;
  return JSON.stringify(value);
}

function identityCell(face, number, onEnrol) {
  if (face.identity) {
    return el("span", {}, el("strong", {}, face.identity.name), ` ${percent(face.identity.similarity)}`);
  }
  if (!onEnrol) return "unknown";
  // announced when it changes, without being a second status region beside the page's own
  const status = el("span", { className: "hint", "aria-live": "polite" });
  const input = el("input", { type: "text", required: true, list: "identity-names", "aria-label": `Name of face ${number}` });
  const form = el("form", { className: "enrol" }, "unknown ", input, el("button", { type: "submit" }, "Enrol"), status);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    status.textContent = "enrolling…";
    try {
      status.textContent = await onEnrol(face, input.value.trim());
    } catch (error) {
      status.textContent = error.message;
    }
  });
  return form;
}

/** The table's columns: those some face answers, identity whenever the service offers it, in a fixed order. */
function columns(faces, onEnrol, identityOffered, correction) {
  const answered = (name) => faces.some((face) => face[name] !== undefined && face[name] !== null);
  const list = [];
  if (answered("emotion")) list.push(["Emotion", (face, n) => labelCell(face.emotion, `Emotion scores of face ${n}`)]);
  if (answered("gender")) list.push(["Gender", (face) => (face.gender ? `${face.gender.label} ${percent(face.gender.score)}` : "—")]);
  if (answered("age")) list.push(["Age", (face) => (typeof face.age === "number" ? String(Math.round(face.age)) : "—")]);
  const others = [...new Set(faces.flatMap(Object.keys))].filter((name) => !KNOWN_FIELDS.has(name));
  for (const name of others) list.push([name.replaceAll("_", " "), (face) => genericCell(face[name])]);
  if (identityOffered || answered("identity")) list.push(["Identity", (face, n) => identityCell(face, n, onEnrol)]);
  if (correction) list.push(["Feedback", (face, n) => correction(face, n)]);
  list.push(["Quality", qualityCell]);
  return list;
}

function summary(analysis) {
  const count = analysis.faces.length;
  const parts = [count === 1 ? "1 face" : `${count} faces`, `detector ${analysis.detector}`,
    `${analysis.width} × ${analysis.height} pixels`];
  for (const [stage, ms] of Object.entries(analysis.timings_ms || {})) parts.push(`${stage} ${ms.toFixed(0)} ms`);
  if (analysis.missing_heads?.length) parts.push(`not served: ${analysis.missing_heads.join(", ")}`);
  if (analysis.request_id === null) parts.push("corrections off: the service did not remember this answer");
  return parts.join(" · ");
}

/** The faces as a person reads them: rows of faces top to bottom, each row left to right. */
export function readingOrder(faces) {
  const middle = ({ box }) => [(box.x1 + box.x2) / 2, (box.y1 + box.y2) / 2];
  const byHeight = [...faces].sort((a, b) => middle(a)[1] - middle(b)[1]);
  const rows = [];
  for (const face of byHeight) {
    const row = rows.at(-1);
    // Same row while the centre is within half a face of the row's first face.
    if (row && middle(face)[1] - middle(row[0])[1] < (row[0].box.y2 - row[0].box.y1) / 2) row.push(face);
    else rows.push([face]);
  }
  return rows.flatMap((row) => row.sort((a, b) => middle(a)[0] - middle(b)[0]));
}

/** Fill `article` (made by `resultShell`) with the photo, its boxes and the face table; `correction(face, number)`,
 * when given, makes each face's control for correcting its answers. */
export function showAnalysis(article, bitmap, analysis, { identityOffered = false, onEnrol = null, correction = null } = {}) {
  const title = article.dataset.title;
  const faces = readingOrder(analysis.faces);
  const canvas = el("canvas", { width: analysis.width, height: analysis.height, role: "img",
    "aria-label": `${title} with ${faces.length} ${faces.length === 1 ? "face" : "faces"} boxed` });
  const cols = columns(faces, onEnrol, identityOffered, correction);
  const rows = faces.map((face, index) => el("tr", { tabindex: 0 },
    el("th", { scope: "row" }, String(index + 1)),
    cols.map(([, cell]) => el("td", {}, cell(face, index + 1)))));
  let highlighted = -1;
  const highlight = (index) => {
    if (index === highlighted) return;
    highlighted = index;
    rows.forEach((row, i) => row.classList.toggle("highlighted", i === index));
    drawFaces(canvas, bitmap, faces, index);
  };
  rows.forEach((row, index) => {
    row.addEventListener("mouseenter", () => highlight(index));
    row.addEventListener("focus", () => highlight(index));
    row.addEventListener("mouseleave", () => highlight(-1));
    row.addEventListener("blur", () => highlight(-1));
  });
  canvas.addEventListener("mousemove", (event) => highlight(faceAt(faces, ...photoPoint(canvas, event))));
  canvas.addEventListener("mouseleave", () => highlight(-1));
  canvas.addEventListener("click", (event) => rows[faceAt(faces, ...photoPoint(canvas, event))]?.focus());
  drawFaces(canvas, bitmap, faces);

  const table = faces.length
    ? el("div", { className: "table-wrap" }, el("table", { className: "faces" },
        el("caption", {}, `Faces in ${title}`),
        el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Face"),
          cols.map(([name]) => el("th", { scope: "col" }, name)))),
        el("tbody", {}, rows)))
    : el("p", { className: "no-faces" }, "No face found in this photo.");
  article.querySelector(".pending")?.remove();
  article.append(el("p", { className: "summary" }, summary(analysis)), el("div", { className: "photo" }, canvas), table);
}

const HEADLINES = [
  [(error) => error.status === 413 || /too_large|too_many/.test(error.code), (title) => `${title} is too large.`],
  [(error) => /image/.test(error.code) && error.status === 400, (title) => `${title} is not an image the service can read.`],
  [(error) => error.status === 0, () => "The service could not be reached."],
  [(error) => error.status === 503, () => "The service is busy or its models are unavailable; try again shortly."],
];

/** The service's error for this photo: a plain headline, then the service's own sentence. */
export function showError(article, error) {
  const title = article.dataset.title;
  const headline = HEADLINES.find(([matches]) => matches(error))?.[1](title) ?? `The service could not analyse ${title}.`;
  article.querySelector(".pending")?.remove();
  article.append(el("div", { className: "error", role: "alert" }, el("strong", {}, headline), el("p", {}, error.message)));
}

/** An empty result for one photo, shown while the service works on it. */
export function resultShell(title) {
  return el("article", { className: "card result", "data-title": title, "aria-label": `Result for ${title}` },
    el("h2", {}, title), el("p", { className: "pending" }, "Analysing…"));
}
