// The operator console: live status (polled), dead letters with replay, order look-up.
import { Session } from "./api.js";
import { $, h, say, show, table, when, wireSignIn } from "./dom.js";

const POLL_MS = 3000;
const session = new Session("console");
let pollTimer = null;
let queueNames = [];

const ops = (path, options) => session.call("", `/v1/ops${path}`, options);

function stateClass(ok) { return ok ? "status-ok" : "status-bad"; }

function perService(answers, render) {
  // One row group per service; a service that could not be asked is named, not hidden.
  return answers.flatMap((a) => (a.error ? [{ service: a.service, error: a.error }] : render(a.service, a.data || {})));
}

function errorCell(r, value) {
  return r.error ? h("span", { class: "status-bad" }, `unavailable: ${r.error}`) : value(r);
}

function renderStatus(status) {
  const queues = status.queues || [];
  queueNames = queues.map((q) => q.name);
  const select = $("#dlq-queue");
  if (select.options.length !== queueNames.length) {
    const current = select.value;
    select.replaceChildren(...queueNames.map((n) => h("option", { value: n }, n)));
    if (queueNames.includes(current)) select.value = current;
  }
  $("#queues").replaceChildren(
    status.queues_error ? h("p", { class: "status-bad" }, `Queue broker: ${status.queues_error}`) : "",
    table("Depth of every queue and its DLQ", [
      { label: "Queue", value: (q) => q.name },
      { label: "Visible", num: true, value: (q) => q.visible },
      { label: "In flight", num: true, value: (q) => q.in_flight },
      { label: "Delayed", num: true, value: (q) => q.delayed },
      { label: "Dead letters", num: true, value: (q) => h("span", {
        class: q.dlq_visible ? "status-bad" : "status-ok", "data-dlq-depth": q.name }, q.dlq_visible) },
      { label: "", value: (q) => h("button", { type: "button", class: "secondary",
        "aria-label": `Show dead letters of ${q.name}`,
        onclick: () => { $("#dlq-queue").value = q.name; loadDeadLetters(); } }, "Dead letters") },
    ], queues));
  const outboxRows = perService(status.outbox || [], (service, d) => (d.queues || []).map((q) => ({ service, ...q })));
  $("#outbox").replaceChildren(table("Pending and failed outbox rows (lag)", [
    { label: "Service", value: (r) => r.service },
    { label: "Queue", value: (r) => errorCell(r, (x) => x.queue) },
    { label: "Pending", num: true, value: (r) => r.pending ?? "" },
    { label: "Oldest pending (s)", num: true, value: (r) => (r.oldest_pending_s == null ? "" : r.oldest_pending_s.toFixed(1)) },
    { label: "Failed", num: true, value: (r) => (r.failed == null ? "" : h("span", { class: r.failed ? "status-bad" : "" }, r.failed)) },
  ], outboxRows));
  const consumerRows = perService(status.consumers || [], (service, d) => (d.consumers || []).map((c) => ({ service, ...c })));
  $("#consumers").replaceChildren(table("Consumers and their last heartbeat", [
    { label: "Service", value: (r) => r.service },
    { label: "Consumer", value: (r) => errorCell(r, (x) => x.consumer) },
    { label: "Alive", value: (r) => (r.error ? "" : h("span", { class: stateClass(r.alive) }, r.alive ? "alive" : "not alive")) },
    { label: "Handled", num: true, value: (r) => r.handled ?? "" },
    { label: "Failed", num: true, value: (r) => r.failed ?? "" },
    { label: "Dead-lettered", num: true, value: (r) => r.dead_lettered ?? "" },
    { label: "Last message", value: (r) => when(r.last_message_at) },
  ], consumerRows));
  const breakerRows = perService(status.breakers || [], (service, d) =>
    Object.entries(d.breakers || {}).map(([name, b]) => ({ service, name, ...b })));
  $("#breakers").replaceChildren(table("Circuit breakers", [
    { label: "Service", value: (r) => r.service },
    { label: "Breaker", value: (r) => errorCell(r, (x) => x.name) },
    { label: "State", value: (r) => (r.error ? "" : h("span", { class: r.state === "closed" ? "status-ok" : "status-bad" }, r.state)) },
    { label: "Failures", num: true, value: (r) => (r.error ? "" : `${r.failures}/${r.fail_max}`) },
  ], breakerRows));
  const blockedRows = perService(status.blocked_groups || [], (service, d) => (d.groups || []).map((g) => ({ service, ...g })));
  $("#blocked").replaceChildren(table("FIFO groups (orders) stuck behind their head message", [
    { label: "Service", value: (r) => r.service },
    { label: "Group (order)", value: (r) => errorCell(r, (x) => x.group_id) },
    { label: "Kind", value: (r) => r.kind ?? "" },
    { label: "Blocked for (s)", num: true, value: (r) => (r.blocked_for_s == null ? "" : r.blocked_for_s.toFixed(0)) },
    { label: "Event", value: (r) => r.event_type ?? "" },
  ], blockedRows));
  $("#updated").textContent = `Updated ${new Date().toLocaleTimeString()}`;
}

async function poll() {
  clearTimeout(pollTimer);
  try {
    renderStatus(await ops("/status"));
    say($("#status-message"), "");
  } catch (err) {
    if (err.status === 401) return signedOut("Your session ended; sign in again.");
    if (err.status === 403) return refuse(err.message);
    say($("#status-message"), `Status: ${err.message}`, "error");
  }
  pollTimer = setTimeout(poll, POLL_MS);
}

function dlqFilter() {
  const form = $("#dlq-form");
  const filter = {};
  for (const name of ["event_type", "order_id", "reason"]) if (form[name].value.trim()) filter[name] = form[name].value.trim();
  return filter;
}

async function loadDeadLetters() {
  const queue = $("#dlq-queue").value;
  if (!queue) return;
  try {
    const page = await ops(`/dlq/${encodeURIComponent(queue)}`, { query: { limit: 100, ...dlqFilter() } });
    $("#dead-letters").replaceChildren(table(`Dead letters of ${page.dlq}`, [
      { label: "Order", value: (m) => m.order_id ?? m.group_id ?? "" },
      { label: "Event", value: (m) => m.event_type ?? "" },
      { label: "Reason", value: (m) => m.reason ?? "" },
      { label: "Error", value: (m) => m.error ?? "" },
      { label: "Receives", num: true, value: (m) => m.receive_count ?? "" },
      { label: "Failed at", value: (m) => when(m.failed_at) },
      { label: "", value: (m) => h("button", { type: "button", "data-replay": m.message_id,
        "aria-label": `Replay ${m.event_type || "message"} of order ${m.order_id || m.group_id || ""}`,
        onclick: () => replay(queue, { message_ids: [m.message_id] }) }, "Replay") },
    ], page.dead_letters));
  } catch (err) {
    say($("#dlq-message"), err.message, "error");
  }
}

async function replay(queue, body) {
  try {
    const result = await ops(`/dlq/${encodeURIComponent(queue)}/replay`, { method: "POST", body });
    const moved = result.moved == null ? "a move task was started" : `${result.moved} moved back`;
    say($("#dlq-message"), `Replayed to ${result.queue}: ${moved} (audit #${result.audit_id}).`, "info");
  } catch (err) {
    say($("#dlq-message"), `Replay refused: ${err.message}`, "error");
  }
  await loadDeadLetters();
  poll();
}

async function replayFiltered() {
  const filter = dlqFilter();
  const body = Object.keys(filter).length ? filter : { all: true };
  const what = Object.keys(filter).length ? "every dead letter matching the filter" : "EVERY dead letter";
  if (!window.confirm(`Replay ${what} of ${$("#dlq-queue").value}?`)) return;
  await replay($("#dlq-queue").value, body);
}

function orderDetails(view) {
  const o = view.order;
  return h("div", { "data-order": o.id },
    h("h3", {}, `Order ${o.id}`),
    h("p", {}, "Status: ", h("strong", { "data-order-status": o.id }, o.status),
      ` · customer ${o.customer_id} · ${o.total} ${o.currency} · placed ${when(o.created_at)}`),
    view.unavailable.length ? h("p", { class: "status-bad" },
      `Not reachable: ${view.unavailable.map((u) => `${u.service} (${u.error})`).join(", ")}`) : "",
    table("Status history", [
      { label: "When", value: (e) => when(e.occurred_at) },
      { label: "Status", value: (e) => e.status },
      { label: "From", value: (e) => e.previous_status ?? "" },
      { label: "Cause", value: (e) => e.event },
      { label: "Applied", value: (e) => (e.applied ? "yes" : "no (stale)") },
    ], o.history || []),
    view.shipments.map((s) => table(`Shipment ${s.tracking_number || s.id} (${s.carrier}): ${s.status}`, [
      { label: "When", value: (e) => when(e.occurred_at) },
      { label: "Status", value: (e) => e.status },
      { label: "Source", value: (e) => e.source ?? "" },
      { label: "Location", value: (e) => e.location ?? "" },
    ], s.events || [])),
    table("Notifications", [
      { label: "#", num: true, value: (n) => n.id },
      { label: "When", value: (n) => when(n.created_at) },
      { label: "Type", value: (n) => n.type },
      { label: "Status", value: (n) => (n.data && n.data.status) || "" },
    ], view.notifications));
}

async function lookUp(event) {
  event.preventDefault();
  const id = $("#order-id").value.trim();
  say($("#order-message"), "");
  if (!id) return say($("#order-message"), "Enter an order id.", "error");
  try {
    $("#order-result").replaceChildren(orderDetails(await ops(`/orders/${encodeURIComponent(id)}`)));
  } catch (err) {
    $("#order-result").replaceChildren();
    say($("#order-message"), err.status === 404 ? `No order ${id}.` : err.message, "error");
  }
}

async function listOrders() {
  say($("#order-message"), "");
  try {
    const page = await ops("/orders", { query: { status: $("#order-status").value.trim(), limit: 50 } });
    const statuses = new Set([...$("#known-statuses").options].map((o) => o.value));
    page.items.forEach((o) => statuses.add(o.status));  // learnt from the API, not hard-coded
    $("#known-statuses").replaceChildren(...[...statuses].map((s) => h("option", { value: s })));
    $("#order-result").replaceChildren(table("Orders, newest first", [
      { label: "Order", value: (o) => h("button", { type: "button", class: "link",
        onclick: () => { $("#order-id").value = o.id; $("#order-form").requestSubmit(); } }, o.id) },
      { label: "Customer", value: (o) => o.customer_id },
      { label: "Status", value: (o) => o.status },
      { label: "Placed", value: (o) => when(o.created_at) },
    ], page.items));
  } catch (err) {
    say($("#order-message"), err.message, "error");
  }
}

function refuse(reason) {
  clearTimeout(pollTimer);
  show($("#app"), false);
  show($("#signin"), false);
  show($("#who"), true);
  say($("#refused"), `This console is for operators only: ${reason}`, "error");
}

async function signedIn() {
  show($("#signin"), false);
  show($("#who"), true);
  say($("#refused"), "");
  if (!session.hasScope("admin")) {
    // The API refuses too (403); this only says so before asking it.
    try { await ops("/status"); } catch (err) { return refuse(err.message); }
  }
  show($("#app"), true);
  poll();
}

function signedOut(reason) {
  clearTimeout(pollTimer);
  session.signOut();
  show($("#app"), false);
  show($("#who"), false);
  say($("#refused"), "");
  show($("#signin"), true);
  say($("#signin-message"), reason || "", "info");
}

function main() {
  wireSignIn($("#signin-form"), $("#signin-message"), async (username, password) => {
    await session.signIn(username, password);
    await signedIn();
  });
  $("#sign-out").addEventListener("click", () => signedOut("Signed out."));
  $("#dlq-form").addEventListener("submit", (e) => { e.preventDefault(); loadDeadLetters(); });
  $("#replay-filtered").addEventListener("click", replayFiltered);
  $("#order-form").addEventListener("submit", lookUp);
  $("#order-list").addEventListener("click", listOrders);
  if (session.signedIn) signedIn();
}

main();
