// Packline staff console: plain JavaScript modules, no build step. Every read goes to a
// service's own HTTP API through /api/<service>/...; calendar commands go to /commands/....
// The staff token stays in this tab (sessionStorage) and is sent with every request.

const $ = (id) => document.getElementById(id);
const state = { directory: { practitioners: [], locations: [] }, fees: [], patient: null, line: null, invoice: null, appointment: null, me: null };

function token() { return sessionStorage.getItem("packline-token"); }

async function call(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { "content-type": "application/json", authorization: `Bearer ${token()}`, ...(options.headers || {}) },
  });
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : await response.text();
  if (!response.ok) {
    const detail = typeof body === "object" ? body.detail : body;
    // A refusal by field (a list of problems, each with where it is): "field: message".
    const problems = Array.isArray(detail)
      ? detail.map((p) => `${(p.loc || []).filter((part) => part !== "body").join(".")}: ${p.msg}`).join("; ")
      : null;
    throw new Error(problems ?? (typeof detail === "string" ? detail : JSON.stringify(detail)));
  }
  return body;
}
const api = (service, path, options) => call(`/api/${service}/${path}`, options);

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

// --- signing in -----------------------------------------------------------------------------

async function signIn(candidate) {
  sessionStorage.setItem("packline-token", candidate);
  try {
    state.directory = await api("calendar", "directory");
    state.fees = await api("calendar", "fees");
    state.me = await api("calendar", "whoami");
  } catch (error) {
    sessionStorage.removeItem("packline-token");
    $("sign-in-error").textContent = `Not signed in: ${error.message}`;
    return;
  }
  $("sign-in").hidden = true;
  $("nav").hidden = false;
  $("who").textContent = signedInAs(state.me);
  fillSelect($("cal-practitioner"), state.directory.practitioners, "practitioner_id");
  fillSelect($("cal-location"), state.directory.locations, "location_id");
  fillSelect($("new-fees"), state.fees, "fee_id");
  $("cal-day").value = $("new-date").value = today(zoneOf($("cal-location").value));
  show(location.hash === "#calendar" ? "calendar" : "invoices");
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

function show(screen) {
  for (const id of ["invoices", "calendar"]) $(id).hidden = id !== screen;
  $(`nav-${screen}`).setAttribute("aria-current", "page");
  $(`nav-${screen === "invoices" ? "calendar" : "invoices"}`).removeAttribute("aria-current");
  if (screen === "calendar") showCalendar();
}

// --- package invoices -----------------------------------------------------------------------

// Patients by name (R16): every word a beginning of one of their names, any order, any accents.
// One match is shown at once; several are listed to choose from; none: the text is an id (a
// patient the directory has not seen yet is still a patient).
async function findPatient(text) {
  const query = new URLSearchParams({ name: text, limit: "20" });
  const found = await api("calendar", `patients?${query}`).then((page) => page.patients, () => []);
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

async function showInvoices() {
  const invoices = await api("invoicing", `patients/${encodeURIComponent(state.patient)}/invoices`);
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
      el("td", {}, line.fee_id),
      el("td", {}, restriction("practitioners", line.practitioners)),
      el("td", {}, restriction("locations", line.locations)),
      el("td", {}, `${line.valid_from} to ${line.valid_until}`),
      el("td", { class: "appointment" }, line.shows + (line.note ? ` — ${line.note}` : "")),
      el("td", {}, el("button", {
        type: "button", class: "pencil", "aria-label": `Edit line ${line.line_number} of ${invoice.package_name}`,
        onclick: () => openLine(invoice, line),
      }, "✎")),
    ));
  return el("article", { class: "invoice", "data-invoice": invoice.invoice_id },
    el("h3", {}, `${invoice.package_name} — ${invoice.status}`),
    el("p", { class: "balance" }, invoice.balance_text),
    el("table", {},
      el("thead", {}, el("tr", {}, ...["#", "Fee", "Practitioner", "Location", "Valid", "Appointment", ""].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, ...rows)));
}

function openLine(invoice, line) {
  state.invoice = invoice;
  state.line = line;
  const dialog = $("line-dialog");
  $("line-summary").textContent = `${invoice.package_name}, line ${line.line_number} (${line.fee_id}), valid ${line.valid_from} to ${line.valid_until}`;
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
  try {
    if ($("add-yes").checked && line.status === "open") {
      const body = { ...localTime(), practitioner_id: $("line-practitioner").value };
      if ($("line-duration").value) body.duration_minutes = Number($("line-duration").value);
      await api("invoicing", path, { method: "PUT", body: JSON.stringify(body) });
    } else if ($("add-unassigned").checked && line.status === "linked") {
      await api("invoicing", path, { method: "DELETE" });
    }
  } catch (error) {
    $("line-error").textContent = error.message;
    return;
  }
  $("line-dialog").close();
  await showInvoices();
  // The booking's answer comes from the calendar through Kafka: follow the line until it lands.
  await until(async () => {
    const fresh = await api("invoicing", `invoices/${invoice.invoice_id}`);
    const now = fresh.lines.find((l) => l.line_id === line.line_id);
    return now && now.status !== "booking_requested";
  });
  await showInvoices();
}

// --- calendar -------------------------------------------------------------------------------

async function showCalendar() {
  // The location's local day (or week), midnight to midnight there: the calendar works it out.
  const query = new URLSearchParams({ date: $("cal-day").value, days: $("cal-view").value, practitioner_id: $("cal-practitioner").value, location_id: $("cal-location").value });
  const appointments = await api("calendar", `appointments?${query}`);
  const first = new Date(`${$("cal-day").value}T12:00:00Z`).toISOString();
  $("calendar-caption").textContent = `${nameOf("practitioners", $("cal-practitioner").value)} at ${nameOf("locations", $("cal-location").value)}, ${day(first)}${$("cal-view").value === "7" ? " (week)" : ""} (${zoneOf($("cal-location").value)} time)`;
  $("calendar-body").replaceChildren(...appointments.map((a) =>
    el("tr", { "data-appointment": a.appointment_id, "data-status": a.status },
      el("td", {}, `${day(a.starts_at, a.time_zone)} ${time(a.starts_at, a.time_zone)} (${a.duration_minutes} min)`),
      el("td", {}, a.patient_name || a.patient_id),  // the id until the directory names them
      el("td", {}, a.fee_ids.join(", ")),
      el("td", {}, a.status),
      el("td", { class: "package" }, a.package ? a.package.text : "—"),
      el("td", {}, el("button", { type: "button", "aria-label": `Open the appointment at ${time(a.starts_at, a.time_zone)} for ${a.patient_name || a.patient_id}`, onclick: () => openPanel(a.appointment_id) }, "Open")),
    )));
  if (!appointments.length) $("calendar-body").replaceChildren(el("tr", {}, el("td", { colspan: "6" }, "No appointments.")));
}

async function openPanel(id) {
  const appointment = await api("calendar", `appointments/${id}`);
  state.appointment = appointment;
  $("panel-details").replaceChildren(
    ...[["Patient", appointment.patient_name ? `${appointment.patient_name} (${appointment.patient_id})` : appointment.patient_id], ["When", `${day(appointment.starts_at, appointment.time_zone)} ${time(appointment.starts_at, appointment.time_zone)}`], ["Duration", `${appointment.duration_minutes} min`],
      ["Practitioner", nameOf("practitioners", appointment.practitioner_id)], ["Location", nameOf("locations", appointment.location_id)], ["Fees", appointment.fee_ids.join(", ")], ["Status", appointment.status]]
      .flatMap(([term, value]) => [el("dt", {}, term), el("dd", {}, value)]));
  if (appointment.package) {
    $("panel-package").textContent = `Package: ${appointment.package.text}`;
  } else {
    const why = await api("matcher", `appointments/${id}/explanation`).catch(() => null);
    $("panel-package").textContent = why ? `Not linked to a package: ${why.summary}` : "Not linked to a package.";
  }
  const active = ["booked", "arrived"].includes(appointment.status);
  $("panel-cancel-appointment").disabled = !active;
  $("panel-delete-appointment").disabled = appointment.status === "deleted";
  $("panel").showModal();
}

async function change(action) {
  const appointment = state.appointment;
  await call(`/commands/appointments/${appointment.appointment_id}/${action}`, { method: "POST", body: JSON.stringify({ patient_id: appointment.patient_id }) });
  const wanted = action === "cancel" ? "cancelled" : "deleted";
  $("panel-package").textContent = `${action === "cancel" ? "Cancelling" : "Deleting"}…`;
  await until(async () => (await api("calendar", `appointments/${appointment.appointment_id}`)).status === wanted);
  $("panel").close();
  await showCalendar();
}

async function book(event) {
  event.preventDefault();
  const status = $("new-appointment-status");
  const body = {
    patient_id: $("new-patient").value,
    practitioner_id: $("cal-practitioner").value,
    location_id: $("cal-location").value,
    date: $("new-date").value,  // the location's wall clock: the console's server converts it
    time: $("new-time").value,
    fee_ids: [...$("new-fees").selectedOptions].map((option) => option.value),
  };
  if ($("new-duration").value) body.duration_minutes = Number($("new-duration").value);
  let answer;
  try {
    answer = await call("/commands/appointments", { method: "POST", body: JSON.stringify(body) });
  } catch (error) {
    status.textContent = `Not booked: ${error.message}`;
    return;
  }
  status.textContent = "Booking…";
  const booked = await until(() => api("calendar", `appointments/${answer.appointment_id}`));
  if (!booked) {
    status.textContent = "The calendar refused the booking (the time may be taken).";
    return;
  }
  status.textContent = `Booked ${day(booked.starts_at, booked.time_zone)} ${time(booked.starts_at, booked.time_zone)}.`;
  $("cal-day").value = $("new-date").value;
  await showCalendar();
  // The matcher links it to a package a moment later: show the note when it arrives.
  await until(async () => (await api("calendar", `appointments/${answer.appointment_id}`)).package, 10);
  await showCalendar();
}

// --- wiring ---------------------------------------------------------------------------------

window.addEventListener("DOMContentLoaded", () => {
  $("sign-in-form").addEventListener("submit", (event) => { event.preventDefault(); signIn($("token").value); });
  $("sign-out").addEventListener("click", () => { sessionStorage.removeItem("packline-token"); location.reload(); });
  $("patient-form").addEventListener("submit", (event) => { event.preventDefault(); findPatient($("patient").value.trim()); });
  $("calendar-form").addEventListener("submit", (event) => { event.preventDefault(); showCalendar(); });
  $("new-appointment-form").addEventListener("submit", book);
  $("line-form").addEventListener("submit", save);
  $("line-cancel").addEventListener("click", () => $("line-dialog").close());
  $("add-yes").addEventListener("change", toggleDetails);
  $("add-unassigned").addEventListener("change", toggleDetails);
  $("check-availability").addEventListener("click", checkAvailability);
  $("unlink").addEventListener("click", unlink);
  $("panel-cancel-appointment").addEventListener("click", () => change("cancel"));
  $("panel-delete-appointment").addEventListener("click", () => change("delete"));
  $("nav-invoices").addEventListener("click", () => show("invoices"));
  $("nav-calendar").addEventListener("click", () => show("calendar"));
  if (token()) signIn(token());
});
