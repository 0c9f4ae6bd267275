// Known people (the identity API, when the service offers it): enrol a face under a name, list, delete.

import { callJson, call, imageForm } from "./api.js";
import { el } from "./dom.js";

const PAGE_SIZE = 50;

// The list answer may be a bare list or an object holding one (`identities` or `items`) with a `total`.
function listed(body) {
  if (Array.isArray(body)) return { items: body, total: null };
  return { items: body.identities ?? body.items ?? [], total: body.total ?? null };
}

export class Identities {
  constructor({ table, more, error, names }) {
    Object.assign(this, { table, more, error, names });
    this.known = [];
    more.addEventListener("click", () => this.load(this.known.length));
  }

  async load(offset = 0) {
    this.error.hidden = true;
    try {
      const { items, total } = listed(await callJson(`/identities?offset=${offset}&limit=${PAGE_SIZE}`, { method: "GET" }));
      this.known = offset ? [...this.known, ...items] : items;
      this.more.hidden = total !== null ? this.known.length >= total : items.length < PAGE_SIZE;
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
      el("td", {}, String(identity.faces ?? identity.face_count ?? "")),
      el("td", {}, el("button", { type: "button", onClick: () => this.remove(identity) }, `Delete ${identity.name}`)))));
    if (!this.known.length) body.append(el("tr", {}, el("td", { colspan: 3 }, "Nobody is enrolled yet.")));
    this.names.replaceChildren(...this.known.map((identity) => el("option", { value: identity.name })));
  }

  async remove(identity) {
    try {
      await call(`/identities/${encodeURIComponent(identity.id)}`, { method: "DELETE" });
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
      identity = await callJson("/identities", { json: { name, metadata: {} } });
      identity.name ??= name;
      this.known.push(identity);
    }
    await call(`/identities/${encodeURIComponent(identity.id)}/faces`, { body: imageForm(image, { box: JSON.stringify(box) }) });
    this.render();
    return `enrolled as ${name}`;
  }
}
