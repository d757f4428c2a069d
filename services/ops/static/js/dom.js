// Small DOM helpers: elements are built with textContent (never innerHTML), so nothing
// an API returns can run as markup.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function $(selector, root = document) { return root.querySelector(selector); }

export function show(el, visible) { el.classList.toggle("hidden", !visible); }

export function say(el, text, kind = "info") {
  el.replaceChildren();
  if (!text) { show(el, false); return; }
  el.className = `message ${kind}`;
  el.textContent = text;
  show(el, true);
}

export function table(caption, columns, rows) {
  // columns: [{label, value(row), num?}]
  return h("div", { class: "table-wrap" }, h("table", {},
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.num ? "num" : "" }, c.label)))),
    h("tbody", {}, rows.length ? rows.map((r) => h("tr", {}, columns.map((c) => h("td", { class: c.num ? "num" : "" }, c.value(r)))))
      : h("tr", {}, h("td", { colspan: String(columns.length), class: "muted" }, "None.")))));
}

export function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
}

// The sign-in form shared by both pages: calls onSubmit(username, password), shows its error.
export function wireSignIn(form, message, onSubmit) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    say(message, "");
    try {
      await onSubmit(form.username.value.trim(), form.password.value);
      form.password.value = "";
    } catch (err) {
      say(message, err.message || "Sign-in failed.", "error");
      form.password.focus();
    } finally {
      button.disabled = false;
    }
  });
}
