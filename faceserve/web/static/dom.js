// A tiny element builder: the page's markup is built from data, never from HTML strings (no injection).

export function el(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "className") element.className = value;
    else if (name === "style") Object.assign(element.style, value);
    else if (name.startsWith("on")) element.addEventListener(name.slice(2).toLowerCase(), value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  element.append(...children.flat().filter((child) => child !== undefined && child !== null && child !== false));
  return element;
}

export function percent(score) {
  return `${Math.round(score * 100)} %`;
}

/** One labelled bar per score, highest first. */
export function scoreBars(scores, label) {
  const entries = Object.entries(scores).sort((a, b) => b[1] - a[1]);
  return el("ul", { className: "bars", "aria-label": label },
    entries.map(([name, score]) => el("li", {},
      el("span", { className: "bar-name" }, name),
      el("span", { className: "bar", "aria-hidden": "true" },
        el("span", { className: "bar-fill", style: { width: `${(score * 100).toFixed(1)}%` } })),
      el("span", { className: "bar-value" }, percent(score)))));
}
