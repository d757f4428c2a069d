// The customer's tracking page: their orders, and one order's live timeline.
import { Session, webConfig } from "./api.js";
import { $, h, say, show, table, when, wireSignIn } from "./dom.js";
import { LiveOrder } from "./live.js";

const session = new Session("tracking");
let config;
let live = null;

function label(note) {
  // Status names come from the events themselves (the order service's), not from this page.
  const status = note.data && note.data.status;
  return status ? `${status}` : note.type;
}

function addToTimeline(note) {
  const list = $("#timeline");
  const item = h("li", { "data-event-id": String(note.id), "data-type": note.type },
    h("strong", { class: "what" }, label(note)),
    note.data && note.data.reason ? ` (${note.data.reason})` : "",
    h("span", { class: "when" }, `${note.type} · ${when(note.created_at)}`));
  // Kept in id order even if an event were ever handed over late.
  const after = [...list.children].find((li) => Number(li.dataset.eventId) > note.id);
  list.insertBefore(item, after || null);
  const status = note.data && note.data.status;
  const cell = document.querySelector(`[data-order-status="${CSS.escape(note.order_id)}"]`);
  if (status && cell && !after) cell.textContent = status;  // the list shows the latest too
}

function track(order) {
  if (live) live.stop();
  $("#timeline").replaceChildren();
  $("#timeline-title").textContent = `Order ${order.id}`;
  show($("#tracking"), true);
  live = new LiveOrder({
    session, notificationUrl: config.api.notification, orderId: order.id,
    eventTypes: config.stream_event_types,
    onEvent: addToTimeline,
    onState: (state) => {
      $("#conn-state").textContent = state;
      $("#tracking").dataset.connection = state;
      if (state === "signed-out") signedOut("Your session ended; sign in again.");
    },
  });
  live.start();
  $("#timeline-title").focus?.();
}

async function loadOrders() {
  const message = $("#orders-message");
  say(message, "");
  try {
    const page = await session.call(config.api.order, "/v1/orders", { query: { limit: 50 } });
    $("#orders").replaceChildren(table("Orders, newest first", [
      { label: "Order", value: (o) => o.id },
      { label: "Placed", value: (o) => when(o.created_at) },
      { label: "Status", value: (o) => h("span", { "data-order-status": o.id }, o.status) },
      { label: "Total", num: true, value: (o) => `${o.total} ${o.currency}` },
      { label: "", value: (o) => h("button", { type: "button", "aria-label": `Track order ${o.id}`,
        "data-track": o.id, onclick: () => track(o) }, "Track") },
    ], page.items));
  } catch (err) {
    if (err.status === 401) return signedOut("Your session ended; sign in again.");
    say(message, err.message, "error");
  }
}

function signedIn() {
  show($("#signin"), false);
  show($("#app"), true);
  show($("#who"), true);
  $("#who-name").textContent = "Signed in";
  loadOrders();
}

function signedOut(reason) {
  if (live) live.stop();
  live = null;
  session.signOut();
  show($("#app"), false);
  show($("#who"), false);
  show($("#signin"), true);
  say($("#signin-message"), reason || "", "info");
}

async function main() {
  config = await webConfig();
  wireSignIn($("#signin-form"), $("#signin-message"), async (username, password) => {
    await session.signIn(username, password);
    signedIn();
  });
  $("#sign-out").addEventListener("click", () => signedOut("Signed out."));
  $("#refresh-orders").addEventListener("click", loadOrders);
  if (session.signedIn) signedIn();
}

main();
