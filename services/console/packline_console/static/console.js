// Packline staff console: plain JavaScript modules, no build step. Every read goes to a
// service's own HTTP API through /api/<service>/...; calendar commands go to /commands/....
// The staff token stays in this tab (sessionStorage) and is sent with every request.

const $ = (id) => document.getElementById(id);
const state = { directory: { practitioners: [], locations: [] }, fees: [], patient: null, line: null, invoice: null, appointment: null, me: null };

function token() { return sessionStorage.getItem("packline-token"); }

const SLOW_SECONDS = 20;  // a request not answered by then is given up, and the page says so

// One request with the staff token: its body and its response (for a paged list's Link). A service
// that is down, slow or refuses becomes an Error whose message can be shown as it is.
async function request(path, options = {}) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), SLOW_SECONDS * 1000);
  let response, body;
  try {
    response = await fetch(path, {
      ...options,
      signal: abort.signal,
      headers: { "content-type": "application/json", authorization: `Bearer ${token()}`, ...(options.headers || {}) },
    });
    body = response.headers.get("content-type")?.includes("json") ? await response.json() : await response.text();
  } catch (error) {
    throw new Error(error.name === "AbortError" ? `no answer in ${SLOW_SECONDS} s: the service is slow or down` : "the console does not answer (network)");
  } finally {
    clearTimeout(timer);
  }
  if (!response.ok) {
    const detail = typeof body === "object" ? body.detail : body;
    // A refusal by field (a list of problems, each with where it is): "field: message".
    const problems = Array.isArray(detail)
      ? detail.map((p) => `${(p.loc || []).filter((part) => part !== "body").join(".")}: ${p.msg}`).join("; ")
      : null;
    throw new Error(problems ?? (typeof detail === "string" ? detail : JSON.stringify(detail)));
  }
  return { body, response };
}
const call = async (path, options) => (await request(path, options)).body;
const api = (service, path, options) => call(`/api/${service}/${path}`, options);

// Every page of a paged list (docs/identity.md: Link rel="next" until there is none).
async function everyPage(service, path) {
  const items = [];
  let next = `/api/${service}/${path}`;
  while (next) {
    const { body, response } = await request(next);
    items.push(...body);
    next = /<([^>]+)>;\s*rel="next"/.exec(response.headers.get("link") || "")?.[1] ?? null;
  }
  return items;
}

// A request's loading and error states where the page shows it: "Loading…" while it runs
// (aria-busy on the region), the error and a Retry button if it fails.
async function loading(statusEl, text, work, region = null) {
  statusEl.classList.remove("error");
  statusEl.replaceChildren(text);
  region?.setAttribute("aria-busy", "true");
  try {
    const result = await work();
    statusEl.replaceChildren();
    return result;
  } catch (error) {
    statusEl.classList.add("error");
    statusEl.replaceChildren(`${text.replace(/…$/, "")} failed: ${error.message}. `,
      el("button", { type: "button", class: "retry", onclick: () => loading(statusEl, text, work, region) }, "Retry"));
    return undefined;
  } finally {
    region?.removeAttribute("aria-busy");
  }
}

// Poll until `probe` answers something truthy; the console updates itself without a reload.
async function until(probe, seconds = 30) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const result = await probe().catch(() => null);
    if (result) return result;
    if (Date.now() > deadline) return null;
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(child ?? ""));
  return node;
}

const nameOf = (kind, id) => state.directory[kind].find((x) => (x.practitioner_id ?? x.location_id) === id)?.name ?? id;
const restriction = (kind, r) => (r && r.ids && r.ids.length ? r.ids.map((id) => nameOf(kind, id)).join(", ") : "Any");
// Dates and times as the location's clocks show them (R15): each location has its time zone.
const day = (iso, zone) => new Date(iso).toLocaleDateString("en-GB", { weekday: "short", day: "numeric", month: "short", year: "numeric", timeZone: zone || "UTC" });
const time = (iso, zone) => new Date(iso).toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit", timeZone: zone || "UTC" });
const zoneOf = (locationId) => (state.directory.locations.find((l) => l.location_id === locationId) || {}).time_zone || "UTC";
const today = (zone) => new Intl.DateTimeFormat("en-CA", { timeZone: zone || "UTC" }).format(new Date());
// A local date and time as the API gives it ("2026-11-30T09:00:00+11:00"): shown as it reads.
const localDay = (local) => new Date(`${local.slice(0, 10)}T12:00:00Z`).toLocaleDateString("en-GB", { weekday: "short", day: "numeric", month: "short", year: "numeric", timeZone: "UTC" });
const localWhen = (a) => `${localDay(a.local_starts_at)} ${a.local_starts_at.slice(11, 16)}`;
const money = (cents, currency) => new Intl.NumberFormat("en-GB", { style: "currency", currency: currency || "AUD" }).format(cents / 100);
const feeName = (id) => state.fees.find((f) => f.fee_id === id)?.name ?? id;
const feeMinutes = (id) => state.fees.find((f) => f.fee_id === id)?.duration_minutes;
const addDays = (isoDay, n) => new Date(Date.parse(`${isoDay}T00:00:00Z`) + n * 86400000).toISOString().slice(0, 10);

// --- live updates ---------------------------------------------------------------------------

// The console's /live stream (Server-Sent Events, read with fetch so that it carries the token):
// the grid and the open panel follow what happens in the clinic, and a booking or a move that
// waits for the calendar's answer hears it, a refusal with its reason, as soon as it is published.
// A refusal is remembered (the last hundred): it may arrive before its booking waits for it.
const live = { connected: false, waiting: new Map(), refused: new Map(), refresh: null };

async function listen() {
  while (token()) {
    try {
      const response = await fetch("/live", { headers: { authorization: `Bearer ${token()}` } });
      if (!response.ok) throw new Error(`the live stream answered ${response.status}`);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        for (let end = buffer.indexOf("\n\n"); end >= 0; end = buffer.indexOf("\n\n")) {
          const block = buffer.slice(0, end).split("\n");
          buffer = buffer.slice(end + 2);
          const kind = block.find((l) => l.startsWith("event: "))?.slice(7);
          const data = block.find((l) => l.startsWith("data: "))?.slice(6);
          if (kind && data) heard(kind, JSON.parse(data));
        }
      }
    } catch (error) {
      // Down or refused: the page asks the services itself meanwhile (see answered()).
    }
    live.connected = false;
    await new Promise((resolve) => setTimeout(resolve, 3000));
  }
}

function heard(kind, notice) {
  if (kind === "ready") { live.connected = notice.reading; return; }
  if (kind === "refused") {
    live.refused.set(notice.appointment_id, notice);
    if (live.refused.size > 100) live.refused.delete(live.refused.keys().next().value);
  }
  live.waiting.get(notice.appointment_id)?.(kind, notice);
  const shown = kind === "reload" || notice.location_id === $("cal-location").value
    || grid.appointments.some((a) => a.appointment_id === notice.appointment_id);
  if (!$("calendar").hidden && shown) {
    clearTimeout(live.refresh);  // a burst of events: one refresh
    live.refresh = setTimeout(async () => {
      await showCalendar();
      const open = state.appointment?.appointment_id;
      if ($("panel").open && open && (kind === "reload" || open === notice.appointment_id)) await openPanel(open);
    }, 250);
  }
}

// The next notice about an appointment, or null after `ms`.
function nextNotice(appointmentId, ms) {
  return new Promise((resolve) => {
    const timer = setTimeout(() => { live.waiting.delete(appointmentId); resolve(null); }, ms);
    live.waiting.set(appointmentId, (kind, notice) => { clearTimeout(timer); live.waiting.delete(appointmentId); resolve({ kind, notice }); });
  });
}

// Until `probe` shows the calendar's answer about an appointment: { result } when it does,
// { refused } (the calendar's reason) as soon as the live stream says so, {} after `seconds`.
// Each notice about it asks again at once; without the stream, every half second.
async function answered(appointmentId, probe, seconds = 30) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    if (live.refused.has(appointmentId)) return { refused: live.refused.get(appointmentId) };
    const result = await probe().catch(() => null);
    if (result) return { result };
    if (live.refused.has(appointmentId)) return { refused: live.refused.get(appointmentId) };
    const left = deadline - Date.now();
    if (left <= 0) return {};
    const told = await nextNotice(appointmentId, Math.min(left, live.connected ? 5000 : 500));
    if (told?.kind === "refused") return { refused: told.notice };
  }
}

// --- signing in -----------------------------------------------------------------------------

async function signIn(candidate) {
  sessionStorage.setItem("packline-token", candidate);
  $("sign-in-error").textContent = "Signing in…";
  try {
    state.directory = await api("calendar", "directory");
    state.fees = await api("calendar", "fees");
    state.me = await api("calendar", "whoami");
  } catch (error) {
    sessionStorage.removeItem("packline-token");
    $("sign-in-error").textContent = `Not signed in: ${error.message}`;
    return;
  }
  $("sign-in-error").textContent = "";
  $("sign-in").hidden = true;
  $("nav").hidden = false;
  $("who").textContent = signedInAs(state.me);
  fillSelect($("cal-practitioner"), state.directory.practitioners, "practitioner_id");
  $("cal-practitioner").prepend(el("option", { value: "" }, "All practitioners"));
  $("cal-practitioner").value = "";
  fillSelect($("book-practitioner"), state.directory.practitioners, "practitioner_id");
  const mine = state.me.clinics;  // the caller's clinics first (docs/identity.md)
  fillSelect($("cal-location"), state.directory.locations.filter((l) => !mine || mine.includes(l.location_id)), "location_id");
  fillSelect($("new-fees"), state.fees, "fee_id");
  fillSelect($("book-fee"), state.fees, "fee_id");
  $("cal-day").value = $("new-date").value = today(zoneOf($("cal-location").value));
  if (matchMedia("(max-width: 40rem)").matches) $("cal-view").value = "1";
  // The Revenue screen is for the roles that may read reports (billing, admin).
  $("nav-revenue").hidden = !may("read reports");
  const clinics = state.directory.locations.filter((l) => !mine || mine.includes(l.location_id));
  fillSelect($("revenue-location"), clinics, "location_id");
  $("revenue-location").prepend(el("option", { value: "" }, mine ? "All my clinics" : "All clinics"));
  $("revenue-location").value = clinics.length === 1 ? clinics[0].location_id : "";
  revenueDefaults();
  show(SCREENS.includes(location.hash.slice(1)) ? location.hash.slice(1) : "invoices");
  listen();
}

// Who the services take the token for (the calendar's /whoami): what the staff member does is
// recorded as theirs.
function signedInAs(me) {
  if (!me.authenticated) return "Signed in (the services' API is open: no verified staff member)";
  const clinics = me.clinics === null ? "every clinic" : me.clinics.map((id) => nameOf("locations", id)).join(", ") || "no clinic";
  return `Signed in as ${me.name} (${me.sub}), ${me.role}, ${clinics}`;
}

function fillSelect(select, items, key) {
  select.replaceChildren(...items.map((item) => el("option", { value: item[key] }, item.name)));
}

const SCREENS = ["invoices", "calendar", "patients", "revenue"];

function show(screen) {
  if (screen === "revenue" && !may("read reports")) screen = "invoices";  // billing and admin only
  for (const id of SCREENS) {
    $(id).hidden = id !== screen;
    if (id === screen) $(`nav-${id}`).setAttribute("aria-current", "page");
    else $(`nav-${id}`).removeAttribute("aria-current");
  }
  if (screen === "calendar") showCalendar();
  if (screen === "revenue") showRevenue();
}

// --- package invoices -----------------------------------------------------------------------

// Patients by name (R16): every word a beginning of one of their names, any order, any accents.
// One match is shown at once; several are listed to choose from; none: the text is an id (a
// patient the directory has not seen yet is still a patient).
async function findPatient(text) {
  const query = new URLSearchParams({ name: text, limit: "20" });
  // A failed search is said, then the text is taken as an id (as when nobody matches).
  const found = await loading($("invoices-status"), "Searching…", () => api("calendar", `patients?${query}`).then((page) => page.patients)) ?? [];
  $("patient-results").replaceChildren();
  if (found.length > 1) {
    $("patient-results").replaceChildren(...found.map((p) => el("li", {},
      el("button", { type: "button", onclick: () => choosePatient(p.patient_id, p) },
        `${p.name}${p.date_of_birth ? `, born ${p.date_of_birth}` : ""} (${p.patient_id})`))));
    $("patient-shown").textContent = `${found.length} patients found: choose one.`;
    $("invoice-list").replaceChildren();
    return;
  }
  await choosePatient(found.length ? found[0].patient_id : text, found[0]);
}

async function choosePatient(patientId, entry) {
  state.patient = patientId;
  $("patient-results").replaceChildren();
  $("patient-shown").textContent = entry ? `${entry.name} (${entry.patient_id})` : `Patient ${patientId}`;
  await showInvoices();
}

// After a change in the Edit Invoice Line dialog: the screen it was opened from, again.
async function showInvoices() {
  if (!$("patients").hidden && state.shownPatient) return showPatientPage(state.shownPatient);
  const invoices = await loading($("invoices-status"), "Loading the invoices…",
    () => everyPage("invoicing", `patients/${encodeURIComponent(state.patient)}/invoices`), $("invoice-list"));
  if (!invoices) return;
  const list = $("invoice-list");
  if (!invoices.length) {
    list.replaceChildren(el("p", {}, `No package invoices for ${state.patient}.`));
    return;
  }
  list.replaceChildren(...invoices.map(renderInvoice));
}

function renderInvoice(invoice) {
  const rows = invoice.lines.map((line) =>
    el("tr", { "data-line": line.line_id, "data-status": line.status },
      el("td", {}, String(line.line_number)),
      el("td", {}, feeName(line.fee_id)),
      el("td", {}, restriction("practitioners", line.practitioners)),
      el("td", {}, restriction("locations", line.locations)),
      el("td", {}, `${line.valid_from} to ${line.valid_until}`),
      el("td", { class: "appointment" }, line.shows + (line.note ? ` — ${line.note}` : "")),
      el("td", { class: "line-actions" }, el("button", {
        type: "button", class: "pencil", "aria-label": `Edit line ${line.line_number} of ${invoice.package_name}`,
        onclick: () => openLine(invoice, line),
      }, "✎"), historyButton(invoice, line)),
    ));
  return el("article", { class: "invoice", "data-invoice": invoice.invoice_id },
    el("h3", {}, `${invoice.invoice_number} — ${invoice.package_name} — ${invoice.status}`),
    el("p", { class: "balance" }, invoice.balance_text),
    ...invoiceTerms(invoice),
    packageActions(invoice),
    el("table", {},
      el("thead", {}, el("tr", {}, ...["#", "Fee", "Practitioner", "Location", "Valid", "Appointment", ""].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, ...rows)));
}

// --- a line's whole story ------------------------------------------------------------------------

// "History" under a line: a disclosure (aria-expanded) whose row below the line loads the line's
// story from invoicing (GET /invoices/{id}/lines/{n}/history, every page), in the clinic's words
// and its location's local time; loading and failure (with Retry) shown in that row.
function historyButton(invoice, line) {
  const id = `history-${invoice.invoice_id}-${line.line_number}`;
  const button = el("button", {
    type: "button", class: "history-toggle", "aria-expanded": "false", "aria-controls": id,
    "aria-label": `History of line ${line.line_number} of ${invoice.package_name}`,
  }, "History");
  button.addEventListener("click", () => toggleHistory(button, id, invoice, line));
  return button;
}

async function toggleHistory(button, id, invoice, line) {
  const row = button.closest("tr");
  const open = document.getElementById(id);
  if (open) {
    open.remove();
    button.setAttribute("aria-expanded", "false");
    return;
  }
  const status = el("p", { class: "status", role: "status" });
  const story = el("ol", { class: "line-history", "aria-label": `History of line ${line.line_number}` });
  const cell = el("td", { colspan: String(row.children.length) }, status, story);
  row.after(el("tr", { id, class: "history-row" }, cell));
  button.setAttribute("aria-expanded", "true");
  const path = `invoices/${invoice.invoice_id}/lines/${line.line_number}/history`;
  // Shown by the request itself, so that Retry shows it too.
  await loading(status, "Loading the line's history…", async () => {
    const entries = await everyPage("invoicing", path);
    story.replaceChildren(...(entries.length
      ? entries.map((entry) => el("li", { "data-happened": entry.happened },
        el("time", { datetime: entry.at }, localMoment(entry.local_at)), " ", storyOf(entry)))
      : [el("li", {}, "Nothing has happened to this line yet: it is unassigned since the sale.")]));
  }, cell);
}

// A local date and time as the API gives it, as the clinic reads it: "Tue 1 Dec 2026 10:00".
const localMoment = (local) => `${localDay(local)} ${local.slice(11, 16)}`;

// Who did it: the signed-in staff member's own name, a practitioner's, else the staff id.
function staffName(id) {
  if (!id) return null;
  if (state.me?.sub === id && state.me.name) return state.me.name;
  const practitioner = state.directory.practitioners.find((p) => p.practitioner_id === id);
  return practitioner ? practitioner.name : id;
}

const UNLINK_REASONS = {
  cancelled: "the appointment was cancelled",
  deleted: "the appointment was deleted",
  no_show: "a no-show",
  no_longer_fits: "the appointment no longer fits the line",
  unassigned_by_staff: "unassigned by staff",
  invoice_voided: "the invoice was voided or refunded",
};

// One change of a line in the clinic's words.
function storyOf(entry) {
  const when = entry.local_starts_at ? localMoment(entry.local_starts_at) : "an appointment";
  const withWhom = entry.practitioner_id ? ` with ${nameOf("practitioners", entry.practitioner_id)}` : "";
  const who = staffName(entry.by_staff);
  const by = who ? ` by ${who}` : "";
  const at = entry.local_at.slice(11, 16);
  // The note says who by name (an unassign's "unlinked by Sam Lee (sam) at …") where only the
  // staff id is known here; a name already said needs no note.
  const note = entry.note && (!who || who === entry.by_staff) ? ` (${entry.note})` : "";
  switch (entry.happened) {
    case "booking_requested": return `Booking requested${by} for ${when}${withWhom}`;
    case "booked": return `Booked by the calendar: linked to ${when}${withWhom}`;
    case "linked": return `Linked to ${when}${withWhom}`;
    case "moved": {
      const from = entry.local_previous_starts_at ? ` from ${localMoment(entry.local_previous_starts_at)}` : "";
      return `Moved${from} to ${when}${withWhom}`;
    }
    case "relinked": return `Linked again to ${when}${withWhom}`;
    case "booking_released": return `Booking request for ${when} released: ${entry.note || entry.reason || "no reason given"}`;
    case "unlinked": return `Unlinked from ${when}${by} at ${at}: ${UNLINK_REASONS[entry.reason] ?? entry.reason}${note}`;
    case "used": return `Used: the patient attended ${when}${withWhom}`;
    case "forfeited": return `Forfeited ${when}: ${entry.reason}`;
    case "expired": return "Written off: still unbooked when the package expired";
    case "transferred": return `Transferred unbooked to another patient's invoice${by}${entry.reason ? `: ${entry.reason}` : ""}`;
    case "extended": return `Valid until ${entry.valid_until}${by}${entry.reason ? `: ${entry.reason}` : ""}`;
    default: return `${entry.happened.replaceAll("_", " ")}${by}${note}`;
  }
}

function openLine(invoice, line) {
  state.invoice = invoice;
  state.line = line;
  const dialog = $("line-dialog");
  $("line-summary").textContent = `${invoice.package_name}, line ${line.line_number} (${feeName(line.fee_id)}), valid ${line.valid_from} to ${line.valid_until}`;
  const held = ["linked", "booking_requested", "used", "forfeited"].includes(line.status);
  const starts = line.local_starts_at;  // the appointment's local date and time, as its location shows it
  $("line-date").value = starts ? starts.slice(0, 10) : today(zoneOf((line.locations.ids || [])[0]));
  $("line-time").value = starts ? starts.slice(11, 16) : "10:00";
  $("line-duration").value = "";
  $(held ? "add-yes" : "add-unassigned").checked = true;
  $("linked-appointment").textContent = held ? `${line.shows}` : "";
  $("unlink").hidden = line.status !== "linked";
  const allowed = (kind, key, r) => state.directory[kind].filter((x) => !(r && r.ids && r.ids.length) || r.ids.includes(x[key]));
  fillSelect($("line-practitioner"), allowed("practitioners", "practitioner_id", line.practitioners), "practitioner_id");
  fillSelect($("line-location"), allowed("locations", "location_id", line.locations), "location_id");
  $("availability").textContent = "";
  $("line-error").textContent = "";
  toggleDetails();
  dialog.showModal();
  $("line-date").focus();
}

function toggleDetails() {
  const adding = $("add-yes").checked;
  for (const id of ["line-time", "line-duration", "line-practitioner", "line-location", "check-availability"]) $(id).disabled = !adding;
}

// The line's date and time are the location's wall clock: invoicing converts them (R15).
function localTime() {
  return { date: $("line-date").value, time: $("line-time").value, location_id: $("line-location").value };
}

async function checkAvailability() {
  const { invoice, line } = state;
  const query = new URLSearchParams({ ...localTime(), practitioner_id: $("line-practitioner").value });
  if ($("line-duration").value) query.set("duration_minutes", $("line-duration").value);
  $("availability").textContent = "Checking…";
  try {
    const answer = await api("invoicing", `invoices/${invoice.invoice_id}/lines/${line.line_id}/availability?${query}`);
    const zone = zoneOf($("line-location").value);
    $("availability").textContent = answer.available
      ? `Available: ${nameOf("practitioners", answer.practitioner_id)} is free at ${time(answer.starts_at, zone)} on ${day(answer.starts_at, zone)}.`
      : `Not available: ${nameOf("practitioners", answer.practitioner_id)} is booked from ${time(answer.clash.starts_at, zone)} to ${time(answer.clash.ends_at, zone)}.`;
  } catch (error) {
    $("availability").textContent = `Could not check: ${error.message}`;
  }
}

async function unlink() {
  const { invoice, line } = state;
  try {
    await api("invoicing", `invoices/${invoice.invoice_id}/lines/${line.line_id}/appointment`, { method: "DELETE" });
  } catch (error) {
    $("line-error").textContent = error.message;
    return;
  }
  $("line-dialog").close();
  await showInvoices();
}

async function save(event) {
  event.preventDefault();
  const { invoice, line } = state;
  const path = `invoices/${invoice.invoice_id}/lines/${line.line_id}/appointment`;
  const to = localTime();
  const wanted = `${to.date}T${to.time}`;
  const moving = $("add-yes").checked && line.status === "linked" && !(line.local_starts_at || "").startsWith(wanted);
  $("line-error").textContent = "";
  try {
    if ($("add-yes").checked && line.status === "open") {
      const body = { ...to, practitioner_id: $("line-practitioner").value };
      if ($("line-duration").value) body.duration_minutes = Number($("line-duration").value);
      await api("invoicing", path, { method: "PUT", body: JSON.stringify(body) });
    } else if (moving) {
      $("line-error").textContent = "Moving the appointment…";
      const refused = await moveLinked(line, to);
      if (refused) { $("line-error").textContent = refused; return; }
    } else if ($("add-unassigned").checked && line.status === "linked") {
      await api("invoicing", path, { method: "DELETE" });
    }
  } catch (error) {
    $("line-error").textContent = error.message;
    return;
  }
  $("line-dialog").close();
  await showInvoices();
  // The answer comes from the calendar through Kafka: follow the line until it lands (a moved
  // appointment: until invoicing has linked it again at its new time, R10).
  const booking = $("add-yes").checked && line.status === "open";
  const answer = await until(async () => {
    const fresh = await api("invoicing", `invoices/${invoice.invoice_id}`);
    const now = fresh.lines.find((l) => l.line_id === line.line_id);
    return now && now.status !== "booking_requested" && (!moving || (now.local_starts_at || "").startsWith(wanted)) ? now : null;
  });
  await showInvoices();
  // A booking the calendar refused: the line is open again, its note the calendar's reason.
  if (booking && answer?.status === "open") {
    const status = screenStatus();
    status.classList.add("error");
    status.textContent = `Line ${line.line_number} of ${invoice.package_name} not booked: ${(answer.note || "the calendar refused the booking").replace(/\.$/, "")}.`;
  }
}

// Where the screen showing the invoice cards says what happened.
const screenStatus = () => ($("patients").hidden ? $("invoices-status") : $("patient-page-status"));

// A linked line at a new time: the calendar moves its appointment (RescheduleAppointment, same
// practitioner and location) and the line keeps it (R10). The refusal in words, or null.
async function moveLinked(line, to) {
  const a = await api("calendar", `appointments/${line.appointment_id}`);
  const clash = await clashAt(a.practitioner_id, a.location_id, to.date, to.time, a.duration_minutes, a.appointment_id);
  if (clash) return `Not moved: ${clash}`;
  await call(`/commands/appointments/${a.appointment_id}/reschedule`, { method: "POST", body: JSON.stringify({ patient_id: a.patient_id, location_id: a.location_id, date: to.date, time: to.time }) });
  const wanted = `${to.date}T${to.time}`;
  const outcome = await answered(a.appointment_id, async () => (await api("calendar", `appointments/${a.appointment_id}`)).local_starts_at.startsWith(wanted));
  if (outcome.refused) return `Not moved: ${outcome.refused.reason}.`;
  return outcome.result ? null : "The calendar has not answered in 30 s: look at the appointment in a moment.";
}

// --- patients: by name as you type, and the patient's page ------------------------------------

// Search as the name is typed (R16), a moment after the last key; an answer to an older text is
// dropped. Used by the Patients screen and by the booking dialog.
function patientSearch(input, results, status, choose) {
  let timer = null;
  let asked = 0;
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const text = input.value.trim();
      const mine = ++asked;
      if (!/[\p{L}\p{N}]/u.test(text)) {
        results.replaceChildren();
        status.textContent = "";
        return;
      }
      const query = new URLSearchParams({ name: text, limit: "20" });
      status.classList.remove("error");
      status.textContent = "Searching…";
      try {
        const found = (await api("calendar", `patients?${query}`)).patients;
        if (mine !== asked) return;
        status.textContent = found.length ? `${found.length}${found.length === 20 ? " or more" : ""} patient${found.length === 1 ? "" : "s"} found` : `No patient named “${text}”.`;
        results.replaceChildren(...found.map((p) => el("li", {},
          el("button", { type: "button", onclick: () => choose(p) },
            `${p.name}${p.date_of_birth ? `, born ${p.date_of_birth}` : ""}`))));
      } catch (error) {
        if (mine !== asked) return;
        status.classList.add("error");
        status.textContent = `Search failed: ${error.message}`;
      }
    }, 250);
  });
}

async function showPatientPage(entry) {
  state.shownPatient = entry;
  state.patient = entry.patient_id;
  $("patient-search-results").replaceChildren();
  $("patient-search-status").textContent = "";
  $("patient-page").hidden = false;
  $("patient-name").textContent = entry.name;
  const id = encodeURIComponent(entry.patient_id);
  const [invoices, appointments] = await loading($("patient-page-status"), "Loading the patient's invoices and appointments…",
    () => Promise.all([everyPage("invoicing", `patients/${id}/invoices`), everyPage("calendar", `patients/${id}/appointments`)]),
    $("patient-page")) ?? [null, null];
  $("patient-facts").replaceChildren(...factList([
    ["Patient id", entry.patient_id],
    ...(entry.date_of_birth ? [["Born", entry.date_of_birth]] : []),
    ...(invoices ? balances(invoices) : []),
  ]));
  $("patient-name").focus();
  if (!invoices) return;
  $("patient-invoices").replaceChildren(...(invoices.length ? invoices.map(renderPackageInvoice) : [el("p", {}, "No package invoices.")]));
  const now = Date.now();
  const upcoming = appointments.filter((a) => Date.parse(a.ends_at ?? a.starts_at) >= now);
  const past = appointments.filter((a) => !upcoming.includes(a)).reverse();
  $("patient-upcoming").replaceChildren(appointmentTable(upcoming, "No upcoming appointments."));
  $("patient-past").replaceChildren(appointmentTable(past, "No past appointments."));
}

function factList(pairs) {
  return pairs.flatMap(([term, value]) => [el("dt", {}, term), el("dd", {}, value)]);
}

// The patient's balances over their redeemable invoices: sessions left and money owing.
function balances(invoices) {
  const live = invoices.filter((i) => !["void", "refunded"].includes(i.status));
  const left = live.reduce((n, i) => n + i.balance.remaining, 0);
  const owing = {};
  for (const i of live) owing[i.currency] = (owing[i.currency] || 0) + Math.max(0, i.price_cents - i.paid_cents);
  const owed = Object.entries(owing).filter(([, cents]) => cents > 0).map(([currency, cents]) => money(cents, currency));
  return [["Sessions left", `${left} on ${live.length} package${live.length === 1 ? "" : "s"}`], ["Owing", owed.join(", ") || "nothing"]];
}

function renderPackageInvoice(invoice) {
  const b = invoice.balance;
  const card = renderInvoice(invoice);
  card.querySelector("h3").replaceWith(el("h5", {}, `${invoice.package_name} — invoice ${invoice.invoice_number}`));
  card.querySelector(".balance").after(el("dl", { class: "facts" }, ...factList([
    ["Invoice number", invoice.invoice_number],
    ["Status", invoice.status],
    ["Price", money(invoice.price_cents, invoice.currency)],
    ["Paid", money(invoice.paid_cents, invoice.currency)],
    ["Owing", money(Math.max(0, invoice.price_cents - invoice.paid_cents), invoice.currency)],
    ["Sessions", `${b.used} used, ${b.booked} booked, ${b.remaining} left of ${b.total}`],
    ["Expires", b.expires_on ?? "never"],
  ])));
  return card;
}

function appointmentTable(appointments, empty) {
  if (!appointments.length) return el("p", {}, empty);
  return el("table", { class: "appointments" },
    el("thead", {}, el("tr", {}, ...["When", "Practitioner", "Location", "Fees", "Status", "Package"].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, ...appointments.map((a) => el("tr", { "data-appointment": a.appointment_id, "data-status": a.status },
      el("td", {}, `${localWhen(a)} (${a.duration_minutes} min)`),
      el("td", {}, nameOf("practitioners", a.practitioner_id)),
      el("td", {}, nameOf("locations", a.location_id)),
      el("td", {}, a.fee_ids.map(feeName).join(", ")),
      el("td", {}, a.status),
      el("td", {}, a.package ? a.package.text : "—")))));
}

// --- calendar -------------------------------------------------------------------------------

// The grid is FullCalendar's free time grid (MIT). One column per practitioner (and per day in
// a week) without the premium resource plugin: each column is one "day" of a run of stand-in
// days from BASE, and the grid shows wall-clock times in UTC, so a column's times are the
// location's local times exactly as the calendar's API gives them (local_starts_at).
const BASE = "2000-01-03";
const grid = { calendar: null, columns: [], appointments: [] };

function gridColumns() {
  const chosen = $("cal-practitioner").value;
  const practitioners = state.directory.practitioners.filter((p) => !chosen || p.practitioner_id === chosen);
  const days = Number($("cal-view").value);
  const columns = [];
  for (let d = 0; d < days; d++) {
    for (const p of practitioners) columns.push({ day: addDays($("cal-day").value, d), practitioner: p });
  }
  return columns;
}

const columnOf = (date) => grid.columns[Math.round((date.getTime() - Date.parse(`${BASE}T00:00:00Z`)) / 86400000 - 0.49)] ?? null;
const standIn = (index, hhmm) => `${addDays(BASE, index)}T${hhmm}:00Z`;
const wallTime = (date) => date.toISOString().slice(11, 16);

async function showCalendar() {
  const query = new URLSearchParams({ date: $("cal-day").value, days: $("cal-view").value, location_id: $("cal-location").value });
  if ($("cal-practitioner").value) query.set("practitioner_id", $("cal-practitioner").value);
  // The location's local day (or week), midnight to midnight there: the calendar works it out.
  const appointments = await loading($("calendar-status"), "Loading the calendar…",
    () => everyPage("calendar", `appointments?${query}`), $("grid"));
  if (!appointments) return;
  grid.appointments = appointments;
  const week = $("cal-view").value === "7";
  const zone = zoneOf($("cal-location").value);
  const span = week ? `week of ${localDay($("cal-day").value)}` : localDay($("cal-day").value);
  const who = $("cal-practitioner").value ? nameOf("practitioners", $("cal-practitioner").value) : "All practitioners";
  $("grid-title").textContent = `${nameOf("locations", $("cal-location").value)}, ${span}: ${who} (${zone} time)`;
  $("calendar-caption").textContent = `${who} at ${nameOf("locations", $("cal-location").value)}, ${span} (${zone} time): list`;
  renderGrid(appointments);
  $("calendar-body").replaceChildren(...appointments.map((a) =>
    el("tr", { "data-appointment": a.appointment_id, "data-status": a.status },
      el("td", {}, `${localWhen(a)} (${a.duration_minutes} min)`),
      el("td", {}, a.patient_name || a.patient_id),  // the id until the directory names them
      el("td", {}, a.fee_ids.map(feeName).join(", ")),
      el("td", {}, a.status),
      el("td", { class: "package" }, a.package ? a.package.text : "—"),
      el("td", {}, el("button", { type: "button", "aria-label": `Open the appointment at ${a.local_starts_at.slice(11, 16)} for ${a.patient_name || a.patient_id}`, onclick: () => openPanel(a.appointment_id) }, "Open")),
    )));
  if (!appointments.length) $("calendar-body").replaceChildren(el("tr", {}, el("td", { colspan: "6" }, "No appointments.")));
}

function renderGrid(appointments) {
  if (!window.FullCalendar) {
    $("calendar-status").textContent = "The calendar grid's script is not installed (npm ci --prefix services/console): the list below has every appointment.";
    return;
  }
  grid.columns = gridColumns();
  const index = (day, practitionerId) => grid.columns.findIndex((c) => c.day === day && c.practitioner.practitioner_id === practitionerId);
  const events = appointments.flatMap((a) => {
    const column = index(a.local_starts_at.slice(0, 10), a.practitioner_id);
    if (column < 0) return [];
    const sameDay = a.local_ends_at.slice(0, 10) === a.local_starts_at.slice(0, 10);
    const active = ["booked", "arrived"].includes(a.status);
    return [{
      id: a.appointment_id,
      title: `${a.patient_name || a.patient_id}${a.package ? ` · ${a.package.text.replace(/^.*?: /, "")}` : ""}${active ? "" : ` (${a.status})`}`,
      start: standIn(column, a.local_starts_at.slice(11, 16)),
      end: sameDay ? standIn(column, a.local_ends_at.slice(11, 16)) : `${addDays(BASE, column + 1)}T00:00:00Z`,
      editable: active,
      classNames: [`status-${a.status}`],
      extendedProps: { appointment: a },
    }];
  });
  const hours = appointments.flatMap((a) => [Number(a.local_starts_at.slice(11, 13)), Number(a.local_ends_at.slice(11, 13)) + 1]);
  const first = Math.min(7, ...hours);
  const last = Math.max(20, ...hours.filter((h) => h <= 24));
  grid.calendar?.destroy();
  const holder = $("grid");
  holder.style.minWidth = `${Math.max(1, grid.columns.length) * 6.5 + 3.5}rem`;
  grid.calendar = new FullCalendar.Calendar(holder, {
    initialView: "practitionerColumns",
    views: { practitionerColumns: { type: "timeGrid", duration: { days: Math.max(1, grid.columns.length) } } },
    initialDate: BASE,
    timeZone: "UTC",
    headerToolbar: false,
    allDaySlot: false,
    nowIndicator: false,
    height: "auto",
    slotMinTime: `${String(first).padStart(2, "0")}:00:00`,
    slotMaxTime: `${String(last).padStart(2, "0")}:00:00`,
    // Half hours to click and to drop on (a finer time is typed in the booking dialog).
    slotDuration: "00:30:00",
    slotLabelFormat: { hour: "2-digit", minute: "2-digit", hour12: false },
    eventTimeFormat: { hour: "2-digit", minute: "2-digit", hour12: false },
    eventBackgroundColor: "#17405e",
    eventBorderColor: "#0d2a3f",
    eventTextColor: "#ffffff",
    editable: true,
    eventDurationEditable: false,
    eventStartEditable: true,
    selectable: false,
    dayHeaderContent: (arg) => headerText(columnOf(arg.date)),
    dayHeaderDidMount: (arg) => markColumn(arg.el, columnOf(arg.date), true),
    dayCellDidMount: (arg) => markColumn(arg.el, columnOf(arg.date)),
    dayCellClassNames: (arg) => (columnOf(arg.date)?.day === today(zoneOf($("cal-location").value)) ? ["is-today"] : []),
    eventDidMount: (arg) => {
      const a = arg.event.extendedProps.appointment;
      arg.el.setAttribute("aria-label", `${localWhen(a)}, ${a.patient_name || a.patient_id} with ${nameOf("practitioners", a.practitioner_id)}, ${a.status}${a.package ? `, ${a.package.text}` : ""}`);
      arg.el.dataset.appointment = a.appointment_id;
    },
    eventAllow: (drop, event) => columnOf(drop.start)?.practitioner.practitioner_id === event.extendedProps.appointment.practitioner_id,
    dateClick: (info) => {
      const column = columnOf(info.date);
      if (column) openBooking({ practitionerId: column.practitioner.practitioner_id, date: column.day, time: wallTime(info.date) });
    },
    eventClick: (info) => { info.jsEvent.preventDefault(); openPanel(info.event.id); },
    eventDrop: (info) => moveAppointment(info),
    events,
  });
  grid.calendar.render();
}

function headerText(column) {
  if (!column) return "";
  return Number($("cal-view").value) > 1 ? `${localDay(column.day).replace(/ \d{4}$/, "")} · ${column.practitioner.name}` : column.practitioner.name;
}

function markColumn(node, column, header = false) {
  if (!column) return;
  node.dataset.practitioner = column.practitioner.practitioner_id;
  node.dataset.day = column.day;
  if (!header) return;
  // FullCalendar names a column's header by its date, here a stand-in: name it as it is.
  const name = Number($("cal-view").value) > 1 ? `${localDay(column.day)}, ${column.practitioner.name}` : column.practitioner.name;
  for (const labelled of node.querySelectorAll("[aria-label]")) labelled.setAttribute("aria-label", name);
}

// Drag and drop: the calendar's RescheduleAppointment, as the console's command. The time is
// checked first (the clash is shown at once); the grid follows when the calendar has moved it,
// and goes back if it has not.
async function moveAppointment(info) {
  const a = info.event.extendedProps.appointment;
  const column = columnOf(info.event.start);
  const to = { date: column.day, time: wallTime(info.event.start) };
  const status = $("calendar-status");
  status.classList.remove("error");
  const refuse = (text) => { info.revert(); status.classList.add("error"); status.textContent = `Not moved: ${text}`; };
  try {
    status.textContent = `Checking ${to.time} on ${localDay(to.date)}…`;
    const clash = await clashAt(a.practitioner_id, a.location_id, to.date, to.time, a.duration_minutes, a.appointment_id);
    if (clash) return refuse(clash);
    status.textContent = `Moving ${a.patient_name || a.patient_id} to ${to.time} on ${localDay(to.date)}…`;
    await call(`/commands/appointments/${a.appointment_id}/reschedule`, { method: "POST", body: JSON.stringify({ patient_id: a.patient_id, location_id: a.location_id, ...to }) });
  } catch (error) {
    return refuse(error.message);
  }
  const wanted = `${to.date}T${to.time}`;
  const outcome = await answered(a.appointment_id, async () => (await api("calendar", `appointments/${a.appointment_id}`)).local_starts_at.startsWith(wanted));
  if (outcome.refused) return refuse(`${outcome.refused.reason}.`);
  if (!outcome.result) return refuse("the calendar has not answered in 30 s: see the appointment in a moment.");
  await showCalendar();
  status.textContent = `Moved ${a.patient_name || a.patient_id} to ${to.time} on ${localDay(to.date)}.`;
  if (state.appointment?.appointment_id === a.appointment_id) await openPanel(a.appointment_id);
}

// Is the practitioner free then? The reason a booking would be refused, in words, or null.
async function clashAt(practitionerId, locationId, date, at, minutes, ignoring = null) {
  const query = new URLSearchParams({ practitioner_id: practitionerId, location_id: locationId, date, time: at, duration_minutes: String(minutes || 60) });
  if (ignoring) query.set("ignoring", ignoring);
  const answer = await api("calendar", `availability?${query}`);
  if (answer.available) return null;
  const zone = zoneOf(locationId);
  return `${nameOf("practitioners", practitionerId)} is already booked from ${time(answer.clash.starts_at, zone)} to ${time(answer.clash.ends_at, zone)}.`;
}

async function openPanel(id) {
  const panel = $("panel");
  if (!panel.open) panel.show();
  $("panel-details").replaceChildren();
  $("panel-package").classList.remove("error");
  const appointment = await loading($("panel-package"), "Loading the appointment…", () => api("calendar", `appointments/${id}`), panel);
  if (!appointment) return;
  state.appointment = appointment;
  $("panel-details").replaceChildren(...factList([
    ["Patient", appointment.patient_name ? `${appointment.patient_name} (${appointment.patient_id})` : appointment.patient_id],
    ["When", `${localWhen(appointment)} (${appointment.time_zone} time)`], ["Duration", `${appointment.duration_minutes} min`],
    ["Practitioner", nameOf("practitioners", appointment.practitioner_id)], ["Location", nameOf("locations", appointment.location_id)],
    ["Fees", appointment.fee_ids.map(feeName).join(", ")], ["Status", appointment.status]]));
  if (appointment.package) {
    $("panel-package").textContent = `Package: ${appointment.package.text}`;
  } else {
    $("panel-package").textContent = "Not linked to a package yet: asking the matcher why…";
    const why = await api("matcher", `appointments/${id}/explanation`).catch(() => null);
    $("panel-package").textContent = why ? `Not linked to a package: ${why.summary}` : "Not linked to a package.";
  }
  const active = ["booked", "arrived"].includes(appointment.status);
  $("panel-cancel-appointment").disabled = !active;
  $("panel-delete-appointment").disabled = appointment.status === "deleted";
  $("panel-title").focus();
}

async function change(action) {
  const appointment = state.appointment;
  const status = $("panel-package");
  status.classList.remove("error");
  status.textContent = `${action === "cancel" ? "Cancelling" : "Deleting"}…`;
  try {
    await call(`/commands/appointments/${appointment.appointment_id}/${action}`, { method: "POST", body: JSON.stringify({ patient_id: appointment.patient_id }) });
  } catch (error) {
    status.classList.add("error");
    status.textContent = `Not ${action === "cancel" ? "cancelled" : "deleted"}: ${error.message}`;
    return;
  }
  const wanted = action === "cancel" ? "cancelled" : "deleted";
  const outcome = await answered(appointment.appointment_id, async () => (await api("calendar", `appointments/${appointment.appointment_id}`)).status === wanted);
  if (!outcome.result) {
    status.classList.add("error");
    status.textContent = outcome.refused
      ? `Not ${wanted}: ${outcome.refused.reason}.`
      : "The calendar has not answered in 30 s: look again in a moment.";
    return;
  }
  $("panel").close();
  await showCalendar();
}

// A booking: the time is checked first, so a clash is shown at once with its reason; then the
// command, and the calendar's answer is followed until the appointment is there.
async function bookAppointment(body, status) {
  status.classList.remove("error");
  const refused = (text) => { status.classList.add("error"); status.textContent = `Not booked: ${text}`; return null; };
  let answer;
  try {
    status.textContent = "Checking the time…";
    const minutes = body.duration_minutes ?? feeMinutes(body.fee_ids[0]);
    const clash = await clashAt(body.practitioner_id, body.location_id, body.date, body.time, minutes);
    if (clash) return refused(clash);
    status.textContent = "Booking…";
    answer = await call("/commands/appointments", { method: "POST", body: JSON.stringify(body) });
  } catch (error) {
    return refused(error.message);
  }
  const outcome = await answered(answer.appointment_id, () => api("calendar", `appointments/${answer.appointment_id}`));
  if (outcome.refused) return refused(`${outcome.refused.reason}.`);
  const booked = outcome.result;
  if (!booked) return refused("the calendar has not answered in 30 s: look in the calendar in a moment before booking again.");
  status.textContent = `Booked ${localWhen(booked)}.`;
  return booked;
}

async function book(event) {
  event.preventDefault();
  const status = $("new-appointment-status");
  if (!$("cal-practitioner").value) {
    status.textContent = "Not booked: choose a practitioner above (or click a free time in the grid).";
    return;
  }
  const body = {
    patient_id: $("new-patient").value,
    practitioner_id: $("cal-practitioner").value,
    location_id: $("cal-location").value,
    date: $("new-date").value,  // the location's wall clock: the console's server converts it
    time: $("new-time").value,
    fee_ids: [...$("new-fees").selectedOptions].map((option) => option.value),
  };
  if ($("new-duration").value) body.duration_minutes = Number($("new-duration").value);
  const booked = await bookAppointment(body, status);
  if (!booked) return;
  $("cal-day").value = $("new-date").value;
  await showCalendar();
  // The matcher links it to a package a moment later: show the note when it arrives.
  await answered(booked.appointment_id, async () => (await api("calendar", `appointments/${booked.appointment_id}`)).package, 10);
  await showCalendar();
}

// --- booking from the grid ----------------------------------------------------------------------

function openBooking({ practitionerId, date, time: at }) {
  state.booking = { patient: null };
  $("book-patient").value = "";
  $("book-patient-results").replaceChildren();
  $("book-patient-chosen").textContent = "No patient chosen yet: type part of their name.";
  $("book-practitioner").value = practitionerId || $("cal-practitioner").value || state.directory.practitioners[0]?.practitioner_id;
  $("book-date").value = date || $("cal-day").value;
  $("book-time").value = at || "09:00";
  $("book-where").textContent = `At ${nameOf("locations", $("cal-location").value)}, ${zoneOf($("cal-location").value)} time.`;
  $("book-status").textContent = "";
  $("book-submit").disabled = false;
  $("book-dialog").showModal();
  $("book-patient").focus();
}

function chooseBookingPatient(p) {
  state.booking.patient = p;
  $("book-patient").value = p.name;
  $("book-patient-results").replaceChildren();
  $("book-patient-chosen").textContent = `Patient: ${p.name}${p.date_of_birth ? `, born ${p.date_of_birth}` : ""}.`;
  $("book-fee").focus();
}

async function submitBooking(event) {
  event.preventDefault();
  const status = $("book-status");
  if (!state.booking.patient) {
    status.classList.add("error");
    status.textContent = "Choose the patient first: type part of their name and pick them.";
    $("book-patient").focus();
    return;
  }
  const body = {
    patient_id: state.booking.patient.patient_id,
    practitioner_id: $("book-practitioner").value,
    location_id: $("cal-location").value,
    date: $("book-date").value,
    time: $("book-time").value,
    fee_ids: [$("book-fee").value],
  };
  $("book-submit").disabled = true;
  const booked = await bookAppointment(body, status);
  $("book-submit").disabled = false;
  if (!booked) return;
  $("book-dialog").close();
  await showCalendar();
  $("calendar-status").textContent = `Booked ${state.booking.patient.name}, ${localWhen(booked)}.`;
  await openPanel(booked.appointment_id);
  // The matcher links it to a package a moment later: the panel and grid show it when it does.
  const linked = (await answered(booked.appointment_id, async () => (await api("calendar", `appointments/${booked.appointment_id}`)).package, 10)).result;
  if (linked) {
    await showCalendar();
    if (state.appointment?.appointment_id === booked.appointment_id) await openPanel(booked.appointment_id);
  }
}

function step(direction) {
  const days = Number($("cal-view").value);
  $("cal-day").value = direction === 0 ? today(zoneOf($("cal-location").value)) : addDays($("cal-day").value, direction * days);
  showCalendar();
}

// --- revenue: the deferred-revenue report -----------------------------------------------------

// Invoicing's GET /reports/deferred-revenue (docs/revenue.md), for billing and admin: by package
// and month what was sold, recognised, forfeited, expired, refunded, transferred and is still
// owed, with each currency's totals; the same report as CSV, fetched with the token.
const REPORT_COLUMNS = [
  ["opening_owed_cents", "Owed at start"], ["sold_cents", "Sold"], ["recognised_cents", "Recognised (used)"],
  ["forfeited_cents", "Forfeited"], ["expired_cents", "Expired"], ["refunded_cents", "Refunded"],
  ["voided_cents", "Voided"], ["transferred_in_cents", "Transferred in"], ["transferred_out_cents", "Transferred out"],
  ["owed_cents", "Still owed"],
];
const packageNames = new Map();

// What the caller's role allows (the calendar's /whoami lists it; an open API allows everything).
const may = (permission) => !state.me || !state.me.authenticated || (state.me.permissions || []).includes(permission);

function revenueDefaults() {
  const now = today(zoneOf($("revenue-location").value || state.directory.locations[0]?.location_id));
  const [y, m] = now.split("-").map(Number);
  $("revenue-from").value = `${now.slice(0, 7)}-01`;
  $("revenue-to").value = new Date(Date.UTC(y, m, 0)).toISOString().slice(0, 10);  // the month's last day
}

function revenueQuery(format) {
  const query = new URLSearchParams({ from: $("revenue-from").value, to: $("revenue-to").value, format });
  if ($("revenue-location").value) query.set("location_id", $("revenue-location").value);
  return query;
}

async function packageName(id) {
  if (!packageNames.has(id)) {
    packageNames.set(id, api("invoicing", `packages/${encodeURIComponent(id)}`).then((p) => p.name).catch(() => id));
  }
  return packageNames.get(id);
}

const monthName = (month) => new Date(`${month}-01T12:00:00Z`).toLocaleDateString("en-GB", { month: "long", year: "numeric", timeZone: "UTC" });

async function showRevenue() {
  const report = await loading($("revenue-status"), "Loading the report…",
    () => api("invoicing", `reports/deferred-revenue?${revenueQuery("json")}`), $("revenue-report"));
  if (!report) return;
  const names = Object.fromEntries(await Promise.all([...new Set(report.rows.map((r) => r.package_id))].map(async (id) => [id, await packageName(id)])));
  const where = report.location_id ? nameOf("locations", report.location_id) : "all your clinics";
  const caption = `Deferred revenue at ${where}, ${localDay(report.from)} to ${localDay(report.to)}`;
  if (!report.rows.length) {
    $("revenue-report").replaceChildren(el("p", {}, `${caption}: nothing sold or owed in this period.`));
    return;
  }
  const figures = (row) => REPORT_COLUMNS.map(([key]) => el("td", { class: "money", "data-column": key }, money(row[key], row.currency)));
  $("revenue-report").replaceChildren(el("table", { class: "report", id: "revenue-table" },
    el("caption", {}, caption),
    el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Package"), el("th", { scope: "col" }, "Month"),
      ...REPORT_COLUMNS.map(([, label]) => el("th", { scope: "col" }, label)))),
    el("tbody", {}, ...report.rows.map((row) => el("tr", { "data-package": row.package_id, "data-month": row.month },
      el("th", { scope: "row" }, names[row.package_id] ?? row.package_id), el("td", {}, monthName(row.month)), ...figures(row)))),
    el("tfoot", {}, ...report.totals.map((total) => el("tr", { class: "totals", "data-currency": total.currency },
      el("th", { scope: "row", colspan: "2" }, `Total (${total.currency})`), ...figures(total))))));
}

// The CSV needs the token, so it is fetched here and handed to the browser as a file.
async function downloadRevenue() {
  const status = $("revenue-csv-status");
  await loading(status, "Preparing the CSV…", async () => {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), SLOW_SECONDS * 1000);
    let response;
    try {
      response = await fetch(`/api/invoicing/reports/deferred-revenue?${revenueQuery("csv")}`,
        { headers: { authorization: `Bearer ${token()}` }, signal: abort.signal });
    } catch (error) {
      throw new Error(error.name === "AbortError" ? `no answer in ${SLOW_SECONDS} s: the service is slow or down` : "the console does not answer (network)");
    } finally {
      clearTimeout(timer);
    }
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error(typeof body.detail === "string" ? body.detail : `invoicing answered ${response.status}`);
    }
    const url = URL.createObjectURL(await response.blob());
    const place = $("revenue-location").value ? `-${$("revenue-location").value}` : "";
    const link = el("a", { href: url, download: `deferred-revenue-${$("revenue-from").value}-to-${$("revenue-to").value}${place}.csv`, hidden: "" });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  });
  if (!status.classList.contains("error")) status.textContent = "CSV downloaded.";
}

// --- package actions on an invoice card ---------------------------------------------------------

// Extend validity, add sessions (top-up), transfer sessions, household: each a dialog sending
// invoicing's own route (billing: permission "sell"); a refusal is shown in the server's words
// with the field it names marked; success reads the card again.
const DIALOGS = ["extend", "topup", "transfer", "household"];
const patientNames = new Map();

async function patientName(id) {
  if (!patientNames.has(id)) {
    patientNames.set(id, api("calendar", `patients/${encodeURIComponent(id)}`).then((p) => p.name).catch(() => id));
  }
  return patientNames.get(id);
}

const openLines = (invoice) => invoice.lines.filter((l) => l.status === "open").length;

// What the card says of the invoice's terms: its last day and grace, its household and the
// sessions it gave away; names filled in as the directory answers.
function invoiceTerms(invoice) {
  const b = invoice.balance;
  const parts = [];
  if (b.expires_on) {
    const grace = invoice.grace_days || 0;
    parts.push(`Valid until ${localDay(b.expires_on)}` + (grace
      ? `, ${grace} day${grace === 1 ? "" : "s"}' grace (unbooked sessions written off after ${localDay(addDays(b.expires_on, grace))})`
      : ", no grace"));
  }
  const moved = invoice.lines.filter((l) => l.status === "transferred").length;
  if (moved) parts.push(`${moved} session${moved === 1 ? "" : "s"} transferred to another patient`);
  const terms = el("p", { class: "terms" }, parts.join(". ") + (parts.length ? "." : ""));
  const shared = el("p", { class: "shared-with" }, invoice.shared_with.length ? `Shared with ${invoice.shared_with.join(", ")}` : "Not shared");
  if (invoice.shared_with.length) {
    Promise.all(invoice.shared_with.map(patientName)).then((names) => { shared.textContent = `Shared with ${names.join(", ")}`; });
  }
  return [terms, shared];
}

function packageActions(invoice) {
  if (!may("sell")) return el("div", { class: "package-actions", hidden: "" });
  const button = (label, open) => el("button", { type: "button", "aria-label": `${label}: ${invoice.package_name}, ${invoice.invoice_number}`, onclick: () => open(invoice) }, label);
  return el("div", { class: "package-actions", role: "group", "aria-label": `Package actions for ${invoice.invoice_number}` },
    button("Extend validity", openExtend), button("Add sessions", openTopUp),
    button("Transfer sessions", openTransfer), button("Household", openHousehold));
}

function openDialog(kind, invoice, summary) {
  state.acting = { kind, invoice };
  const form = $(`${kind}-form`);
  form.reset();
  for (const field of form.querySelectorAll("[aria-invalid]")) field.removeAttribute("aria-invalid");
  $(`${kind}-error`).textContent = "";
  $(`${kind}-summary`).textContent = summary;
  form.querySelector("button[type=submit]").disabled = false;
  $(`${kind}-dialog`).showModal();
  form.querySelector("input, select").focus();
}

const invoiceSummary = (invoice) => `${invoice.package_name}, ${invoice.invoice_number}: ${invoice.balance_text}.`;

function openExtend(invoice) {
  // The current last day is said; invoicing refuses a day not after it, in its own words.
  const last = invoice.balance.expires_on ? ` Valid until ${localDay(invoice.balance.expires_on)} now.` : "";
  openDialog("extend", invoice, `${invoiceSummary(invoice)}${last}`);
}

function openTopUp(invoice) {
  const fees = [...new Set(invoice.lines.map((l) => l.fee_id))];
  openDialog("topup", invoice, invoiceSummary(invoice));
  $("topup-price-label").textContent = `Price (${invoice.currency})`;
  fillSelect($("topup-fee"), fees.map((id) => ({ fee_id: id, name: feeName(id) })), "fee_id");
  // Only an invoice of several fees needs to be told which one.
  for (const id of ["topup-fee", "topup-fee-label"]) $(id).hidden = fees.length < 2;
}

function openTransfer(invoice) {
  openDialog("transfer", invoice, `${invoiceSummary(invoice)} ${openLines(invoice)} unbooked session${openLines(invoice) === 1 ? "" : "s"} can move.`);
  state.acting.to = null;
  $("transfer-results").replaceChildren();
  $("transfer-chosen").textContent = "No patient chosen yet: type part of their name.";
}

function chooseRecipient(p) {
  state.acting.to = p;
  $("transfer-patient").value = p.name;
  $("transfer-results").replaceChildren();
  $("transfer-chosen").textContent = `To ${p.name}${p.date_of_birth ? `, born ${p.date_of_birth}` : ""}.`;
  $("transfer-sessions").focus();
}

async function openHousehold(invoice) {
  openDialog("household", invoice, `${invoice.package_name}, ${invoice.invoice_number}: family members whose appointments may use its sessions too.`);
  state.acting.members = invoice.shared_with.map((id) => ({ patient_id: id, name: id }));
  $("household-results").replaceChildren();
  $("household-found").textContent = "";
  showMembers();
  await Promise.all(state.acting.members.map(async (m) => { m.name = await patientName(m.patient_id); }));
  showMembers();
}

function showMembers() {
  const { members } = state.acting;
  $("household-members").replaceChildren(...(members.length
    ? members.map((m) => el("li", { "data-patient": m.patient_id }, `${m.name} `,
      el("button", { type: "button", "aria-label": `Remove ${m.name}`, onclick: () => removeMember(m.patient_id) }, "Remove")))
    : [el("li", {}, "Shared with nobody.")]));
}

function addMember(p) {
  const { members, invoice } = state.acting;
  $("household-results").replaceChildren();
  $("household-patient").value = "";
  if (p.patient_id === invoice.patient_id) {
    $("household-found").textContent = `${p.name} is the invoice's own patient.`;
  } else if (members.some((m) => m.patient_id === p.patient_id)) {
    $("household-found").textContent = `${p.name} is already in the household.`;
  } else {
    patientNames.set(p.patient_id, Promise.resolve(p.name));
    members.push({ patient_id: p.patient_id, name: p.name });
    $("household-found").textContent = `${p.name} added: Save household to keep it.`;
    showMembers();
  }
  $("household-patient").focus();
}

function removeMember(id) {
  const removed = state.acting.members.find((m) => m.patient_id === id);
  state.acting.members = state.acting.members.filter((m) => m.patient_id !== id);
  $("household-found").textContent = `${removed?.name ?? id} removed: Save household to keep it.`;
  showMembers();
  $("household-patient").focus();
}

// The request of each dialog: [method, path, body, what to say when it is done].
function actionRequest(kind, invoice) {
  const path = `invoices/${invoice.invoice_id}`;
  const text = (id) => $(id).value.trim();
  switch (kind) {
    case "extend":
      return ["PUT", `${path}/validity`, { valid_until: $("extend-until").value, reason: text("extend-reason") },
        () => `Valid until ${localDay($("extend-until").value)}.`];
    case "topup": {
      const body = { sessions: Number($("topup-sessions").value), price_cents: Math.round(Number($("topup-price").value) * 100) };
      if (text("topup-reason")) body.reason = text("topup-reason");
      if (!$("topup-fee").hidden) body.fee_id = $("topup-fee").value;
      return ["POST", `${path}/top-ups`, body, () => `${body.sessions} session${body.sessions === 1 ? "" : "s"} added for ${money(body.price_cents, invoice.currency)}.`];
    }
    case "transfer": {
      const to = state.acting.to;
      if (!to) return { field: "to_patient_id", message: "choose the patient who receives the sessions: type part of their name and pick them" };
      const sessions = Number($("transfer-sessions").value);
      return ["POST", `${path}/transfers`, { to_patient_id: to.patient_id, sessions, reason: text("transfer-reason") },
        (made) => `${sessions} session${sessions === 1 ? "" : "s"} transferred to ${to.name} (their invoice ${made.invoice_number}).`];
    }
    default: {
      const body = { shared_with: state.acting.members.map((m) => m.patient_id) };
      if (text("household-reason")) body.reason = text("household-reason");
      const names = state.acting.members.map((m) => m.name);
      return ["PUT", `${path}/household`, body, () => (names.length ? `Shared with ${names.join(", ")}.` : "Shared with nobody.")];
    }
  }
}

// A refusal in the server's words; the field it names ("sessions: …") is marked and focused.
function refuse(kind, message) {
  const form = $(`${kind}-form`);
  $(`${kind}-error`).textContent = `Refused: ${message}`;
  const field = /^([a-z_]+)(\.\d+)?: /.exec(message)?.[1];
  const input = field && form.querySelector(`[name="${field}"]`);
  if (input && !input.hidden) {
    input.setAttribute("aria-invalid", "true");
    input.setAttribute("aria-errormessage", `${kind}-error`);
    input.focus();
  }
}

async function submitAction(event) {
  event.preventDefault();
  const { kind, invoice } = state.acting;
  const form = $(`${kind}-form`);
  for (const field of form.querySelectorAll("[aria-invalid]")) field.removeAttribute("aria-invalid");
  const asked = actionRequest(kind, invoice);
  if (!Array.isArray(asked)) return refuse(kind, `${asked.field}: ${asked.message}`);
  const [method, path, body, said] = asked;
  const submit = form.querySelector("button[type=submit]");
  submit.disabled = true;
  $(`${kind}-error`).textContent = "Sending…";
  let answer;
  try {
    answer = await api("invoicing", path, { method, body: JSON.stringify(body) });
  } catch (error) {
    submit.disabled = false;
    return refuse(kind, error.message);
  }
  $(`${kind}-dialog`).close();
  await showInvoices();
  const status = screenStatus();
  status.classList.remove("error");
  status.textContent = `${invoice.package_name}, ${invoice.invoice_number}: ${said(answer)}`;
}

// --- wiring ---------------------------------------------------------------------------------

window.addEventListener("DOMContentLoaded", () => {
  $("sign-in-form").addEventListener("submit", (event) => { event.preventDefault(); signIn($("token").value); });
  $("sign-out").addEventListener("click", () => { sessionStorage.removeItem("packline-token"); location.reload(); });
  $("patient-form").addEventListener("submit", (event) => { event.preventDefault(); findPatient($("patient").value.trim()); });
  $("calendar-form").addEventListener("submit", (event) => { event.preventDefault(); showCalendar(); });
  for (const id of ["cal-practitioner", "cal-location", "cal-view"]) $(id).addEventListener("change", showCalendar);
  $("cal-previous").addEventListener("click", () => step(-1));
  $("cal-today").addEventListener("click", () => step(0));
  $("cal-next").addEventListener("click", () => step(1));
  $("cal-new").addEventListener("click", () => openBooking({}));
  $("new-appointment-form").addEventListener("submit", book);
  $("book-form").addEventListener("submit", submitBooking);
  $("book-cancel").addEventListener("click", () => $("book-dialog").close());
  patientSearch($("book-patient"), $("book-patient-results"), $("book-patient-chosen"), chooseBookingPatient);
  patientSearch($("patient-search"), $("patient-search-results"), $("patient-search-status"), showPatientPage);
  $("patient-search-form").addEventListener("submit", (event) => event.preventDefault());
  $("line-form").addEventListener("submit", save);
  $("line-cancel").addEventListener("click", () => $("line-dialog").close());
  $("add-yes").addEventListener("change", toggleDetails);
  $("add-unassigned").addEventListener("change", toggleDetails);
  $("check-availability").addEventListener("click", checkAvailability);
  $("unlink").addEventListener("click", unlink);
  $("panel-cancel-appointment").addEventListener("click", () => change("cancel"));
  $("panel-delete-appointment").addEventListener("click", () => change("delete"));
  $("panel-patient").addEventListener("click", () => {
    const a = state.appointment;
    if (!a) return;
    location.hash = "#patients";
    show("patients");
    showPatientPage({ patient_id: a.patient_id, name: a.patient_name || a.patient_id });
  });
  // The panel beside the grid is not modal: Escape closes it too.
  $("panel").addEventListener("keydown", (event) => { if (event.key === "Escape") $("panel").close(); });
  for (const screen of SCREENS) $(`nav-${screen}`).addEventListener("click", () => show(screen));
  $("revenue-form").addEventListener("submit", (event) => { event.preventDefault(); showRevenue(); });
  $("revenue-csv").addEventListener("click", downloadRevenue);
  for (const kind of DIALOGS) {
    $(`${kind}-form`).addEventListener("submit", submitAction);
    $(`${kind}-dialog`).querySelector(".dialog-cancel").addEventListener("click", () => $(`${kind}-dialog`).close());
  }
  patientSearch($("transfer-patient"), $("transfer-results"), $("transfer-chosen"), chooseRecipient);
  patientSearch($("household-patient"), $("household-results"), $("household-found"), addMember);
  if (token()) signIn(token());
});
