// The photo with its faces, drawn by the page from the service's JSON (so that a face can be highlighted).

export const BOX_COLOUR = "#00ff00"; // the colour of the service's own annotation (faceserve/pipeline/annotate.py)
export const HIGHLIGHT_COLOUR = "#ff8c00";
const LANDMARK_COLOUR = "#ff2d95";
const TEXT_COLOUR = "#000000";

/** What the caption over a face says: its number, then each head's answer. */
export function caption(face, number) {
  const parts = [];
  if (face.emotion) parts.push(face.emotion.label);
  if (face.gender) parts.push(face.gender.label);
  if (typeof face.age === "number") parts.push(String(Math.round(face.age)));
  if (face.identity) parts.push(face.identity.name);
  return `${number}: ${parts.join(", ")}`;
}

/** Draw `bitmap` at the canvas's size (the photo's, as the service decoded it) and box every face. */
export function drawFaces(canvas, bitmap, faces, highlighted = -1) {
  const context = canvas.getContext("2d");
  context.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  const side = Math.max(canvas.width, canvas.height);
  const line = Math.max(2, Math.round(side / 300));
  const fontPx = Math.max(12, Math.round(side / 45));
  context.font = `bold ${fontPx}px system-ui, sans-serif`;
  context.textBaseline = "top";
  // The highlighted face last, so that it is drawn over its neighbours.
  const order = faces.map((_, index) => index).filter((index) => index !== highlighted);
  if (highlighted >= 0 && highlighted < faces.length) order.push(highlighted);
  for (const index of order) {
    const face = faces[index];
    const { x1, y1, x2, y2 } = face.box;
    const colour = index === highlighted ? HIGHLIGHT_COLOUR : BOX_COLOUR;
    context.lineWidth = index === highlighted ? line * 2 : line;
    context.strokeStyle = colour;
    context.strokeRect(x1, y1, x2 - x1, y2 - y1);
    for (const [x, y] of face.landmarks || []) {
      context.fillStyle = LANDMARK_COLOUR;
      context.beginPath();
      context.arc(x, y, line * 1.5, 0, 2 * Math.PI);
      context.fill();
    }
    const text = caption(face, index + 1);
    const width = context.measureText(text).width + 2 * line;
    const height = fontPx + 2 * line;
    const top = y1 - height >= 0 ? y1 - height : y1; // inside the box when there is no room above it
    context.fillStyle = colour;
    context.fillRect(x1, top, width, height);
    context.fillStyle = TEXT_COLOUR;
    context.fillText(text, x1 + line, top + line);
  }
}

/** The face whose box holds the point (photo pixels), the smallest when boxes overlap; -1 for none. */
export function faceAt(faces, x, y) {
  let found = -1;
  let foundArea = Infinity;
  faces.forEach(({ box }, index) => {
    const area = (box.x2 - box.x1) * (box.y2 - box.y1);
    if (x >= box.x1 && x <= box.x2 && y >= box.y1 && y <= box.y2 && area < foundArea) {
      found = index;
      foundArea = area;
    }
  });
  return found;
}

/** A pointer event's position in the canvas's own pixels, whatever size CSS shows it at. */
export function photoPoint(canvas, event) {
  const rect = canvas.getBoundingClientRect();
  return [(event.clientX - rect.left) * canvas.width / rect.width,
          (event.clientY - rect.top) * canvas.height / rect.height];
}
