// Known people (the identity API, when the service offers it): enrol a face under a name, list, delete.
// The API takes ids in the JSON body: /identities (a page), /identities/create, /identities/add_faces,
// /identities/delete.

import { callJson, imageForm } from "./api.js";
import { el } from "./dom.js";

const PAGE_SIZE = 50;

export class Identities {
  constructor({ table, more, error, names }) {
    Object.assign(this, { table, more, error, names });
    this.known = [];
    this.nextAfter = null;
    more.addEventListener("click", () => this.load(this.nextAfter));
  }

  /** The first page, or the page after the identity `after` (appended). */
  async load(after = null) {
    this.error.hidden = true;
    try {
      const page = await callJson("/identities", { json: { limit: PAGE_SIZE, after } });
      this.known = after ? [...this.known, ...page.identities] : page.identities;
      this.nextAfter = page.next_after;
      this.more.hidden = !page.next_after;
    } catch (error) {
      this.error.textContent = `The list of known people could not be read: ${error.message}`;
      this.error.hidden = false;
    }
    this.render();
  }

  render() {
    const body = this.table.tBodies[0];
    body.replaceChildren(...this.known.map((identity) => el("tr", {},
      el("td", {}, identity.name),
      el("td", {}, String(identity.face_count)),
      el("td", {}, el("button", { type: "button", onClick: () => this.remove(identity) }, `Delete ${identity.name}`)))));
    if (!this.known.length) body.append(el("tr", {}, el("td", { colspan: 3 }, "Nobody is enrolled yet.")));
    this.names.replaceChildren(...this.known.map((identity) => el("option", { value: identity.name })));
  }

  async remove(identity) {
    try {
      await callJson("/identities/delete", { json: { identity_id: identity.id } });
      this.known = this.known.filter((other) => other.id !== identity.id);
      this.render();
    } catch (error) {
      this.error.textContent = `${identity.name} could not be deleted: ${error.message}`;
      this.error.hidden = false;
    }
  }

  /** Enrol the face at `box` of `image` under `name` (a new identity unless one has that name); says what happened. */
  async enrol(image, box, name) {
    if (!name) throw new Error("type a name first");
    let identity = this.known.find((known) => known.name === name);
    if (!identity) {
      identity = await callJson("/identities/create", { json: { name, metadata: {} } });
      this.known.push(identity);
    }
    const form = imageForm(image, { identity_id: identity.id, boxes: JSON.stringify([box]) }, "images");
    const added = await callJson("/identities/add_faces", { body: form });
    identity.face_count += added.faces.length;
    this.render();
    return `enrolled as ${name}`;
  }
}
