// The technician's page: who is logged in, the sensors, the live vitals and the ECG strip.
// Everything comes from the JSON API; state-changing requests carry the session's CSRF token.
"use strict";

const VITAL_LABELS = {
  "8867-4": "Heart rate",
  "59408-5": "SpO2",
  "2708-6": "SpO2 (arterial)",
  "85354-9": "Blood pressure",
  "8310-5": "Body temperature",
  "9279-1": "Respiratory rate",
  "2339-0": "Glucose",
  "15074-8": "Glucose",
};
const PROBLEM_STATES = new Set(["lost", "not accepted", "pairing", "connecting", "discovered"]);
// How a firmware update ended → the check level it is shown as (reverted, failed: a problem).
const OUTCOME_LEVELS = { confirmed: "ok", testing: "warn", refused: "warn", reverted: "fail", failed: "fail" };
const MM_PER_S = 25; // paper speed
const MM_PER_MV = 10; // gain
const CSS_PX_PER_MM = 96 / 25.4;

const state = {
  sensors: [],
  updating: new Set(), // addresses whose update request is on its way
  started: new Map(), // address -> the update job this page started, until the rows show it
  vitals: new Map(), // address -> Map(label -> {text, at})
  ecg: null, // set below: newStrip() needs the function
  pleth: null,
};

// -- sensors ---------------------------------------------------------------------------------

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function button(label, title, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.title = title;
  b.addEventListener("click", onClick);
  return b;
}

async function act(what, promise) {
  try {
    await promise;
    say(`${what}: done.`);
  } catch (failure) {
    say(`${what}: ${failure.message}`);
  }
}

function sensorActions(sensor) {
  const wrap = document.createElement("div");
  wrap.className = "actions";
  const address = sensor.address;
  if (!sensor.accepted) {
    wrap.appendChild(button("Accept", `Connect to ${address} from now on`, () =>
      act(`Accept ${address}`, api("POST", `/api/sensors/${address}/accept`))));
  } else if (sensor.accepted !== "configured") {
    wrap.appendChild(button("Forget", `Stop connecting to ${address} and delete its bond`, () => {
      if (confirm(`Forget ${sensor.name} (${address})? Its readings stay.`)) {
        act(`Forget ${address}`, api("DELETE", `/api/sensors/${address}`));
      }
    }));
  }
  if (sensor.measure && sensor.state === "streaming") {
    const burden = sensor.measure.burden;
    wrap.appendChild(button(`Measure (${burden})`, `Take a measurement on ${sensor.name} now`, () => {
      if (burden === "cuff-inflation" && !confirm(`This inflates the cuff of ${sensor.name} on the patient's arm. Start it?`)) return;
      say(`Measuring on ${sensor.name}…`);
      api("POST", `/api/sensors/${address}/measure`).then(
        (answer) => say(`${sensor.name}: ${answer.value ?? "a value"} (${answer.codes[0]}).`),
        (failure) => say(`${sensor.name}: ${failure.message}`),
      );
    }));
  }
  if (sensor.waiting_for_passkey) {
    const input = document.createElement("input");
    input.inputMode = "numeric";
    input.maxLength = 6;
    input.placeholder = "passkey";
    input.setAttribute("aria-label", `Passkey shown by ${sensor.name}`);
    wrap.appendChild(input);
    wrap.appendChild(button("Pair", `Give the passkey ${sensor.name} shows`, () =>
      act(`Pair ${address}`, api("POST", `/api/sensors/${address}/passkey`, { passkey: input.value }))));
  }
  return wrap;
}

// -- firmware: the version, an update from the repository, its progress and outcome ------------

function span(className, text) {
  const s = document.createElement("span");
  s.className = className;
  s.textContent = text;
  return s;
}

function firmwareJob(sensor) {
  // The sensor's last update; one this page just started shows at once, before the rows do.
  const job = sensor.firmware?.job ?? null;
  const started = state.started.get(sensor.address);
  if (!started) return job;
  if (!sensor.firmware || (job && job.started_at >= started.started_at)) {
    state.started.delete(sensor.address);
    return job;
  }
  return started;
}

function updateFirmware(sensor) {
  const address = sensor.address;
  const from = sensor.firmware.version ?? "an unknown version";
  const to = sensor.firmware.update.version;
  const question = `Update the firmware of ${sensor.name} (${address}) from ${from} to ${to}? ` +
    "The sensor restarts once and misses a few seconds of data; if the new firmware fails its " +
    `check, the sensor goes back to ${from}.`;
  if (!confirm(question)) return;
  state.updating.add(address);
  renderSensors();
  say(`Updating ${sensor.name} to ${to}…`);
  api("POST", `/api/firmware/${address}/update`, { force: false, confirm: true })
    .then(
      (answer) => {
        state.started.set(address, answer.job);
        say(`${sensor.name}: firmware update to ${answer.job.version} started.`);
      },
      (failure) => say(`Update of ${sensor.name} to ${to}: ${failure.message}`),
    )
    .finally(() => {
      state.updating.delete(address);
      renderSensors();
    });
}

function jobProgress(sensor, job) {
  const wrap = document.createElement("div");
  wrap.className = "fw-job";
  wrap.title = job.steps.length ? job.steps[job.steps.length - 1].text : job.phase;
  const bar = document.createElement("progress");
  bar.max = 100;
  bar.value = job.percent;
  bar.textContent = `${job.percent} %`;
  bar.setAttribute("aria-label", `Firmware update of ${sensor.name} to ${job.version}`);
  let text = job.phase === "uploading" ? `uploading ${Math.floor(job.percent)} %` : job.phase;
  if (job.resumes) text += `, resumed ${job.resumes}×`;
  wrap.append(bar, span("fw-phase", `→ ${job.version}: ${text}`));
  return wrap;
}

function jobOutcome(job) {
  const outcome = span(`fw-outcome level-${OUTCOME_LEVELS[job.outcome] || "warn"}`, `${job.outcome}: ${job.message}`);
  outcome.dataset.outcome = job.outcome;
  outcome.title = `${job.from_version ?? "?"} → ${job.version}${job.by ? `, by ${job.by}` : ""}, ${job.finished_at}`;
  return outcome;
}

function firmwareCell(row, sensor) {
  const fw = sensor.firmware;
  const device = sensor.device;
  const td = cell(row, "", "wrap firmware");
  td.title = [device?.manufacturer, fw?.model ?? device?.model, device?.serial, device?.firmware].filter(Boolean).join(" · ");
  td.appendChild(span("fw-version", fw?.version ?? device?.firmware ?? "—"));
  const job = firmwareJob(sensor);
  const running = job !== null && job.outcome === null;
  if (fw?.update && !running) {
    const update = span("fw-update", `→ ${fw.update.version}`);
    update.title = fw.updatable
      ? `${fw.update.file} in the firmware repository`
      : `${fw.update.file} in the firmware repository; ${sensor.name} has no MCUmgr SMP service: it cannot be updated over Bluetooth`;
    td.append(" ", update);
    if (fw.updatable && sensor.state === "streaming") {
      const b = button("Update", `Install firmware ${fw.update.version} (${fw.update.file}) on ${sensor.name}`, () => updateFirmware(sensor));
      b.setAttribute("aria-label", `Update the firmware of ${sensor.name} to ${fw.update.version}`);
      b.disabled = state.updating.has(sensor.address);
      td.append(" ", b);
    }
  }
  if (running) td.appendChild(jobProgress(sensor, job));
  else if (job) td.appendChild(jobOutcome(job));
}

function sortedSensors() {
  const filter = $("filter").value;
  const sort = $("sort").value;
  const shown = (s) =>
    filter === "problems" ? PROBLEM_STATES.has(s.state) : filter === "updates" ? Boolean(s.firmware?.update) : true;
  let rows = state.sensors.filter(shown);
  const problem = (s) => (PROBLEM_STATES.has(s.state) ? 0 : 1);
  const battery = (s) => (s.battery === null ? 101 : s.battery);
  const byKind = (a, b) => (a.kind || "").localeCompare(b.kind || "") || a.address.localeCompare(b.address);
  if (sort === "problems") rows = rows.sort((a, b) => problem(a) - problem(b) || byKind(a, b));
  else if (sort === "battery") rows = rows.sort((a, b) => battery(a) - battery(b) || byKind(a, b));
  else rows = rows.sort(byKind);
  return rows;
}

function renderSensors() {
  const body = $("sensors").querySelector("tbody");
  const focused = document.activeElement;
  if (focused && body.contains(focused) && focused.tagName === "INPUT") return; // typing a passkey
  // A focused button keeps the focus across the new rows (found again by its row and label).
  const refocus = focused && body.contains(focused) && focused.tagName === "BUTTON"
    ? { address: focused.closest("tr").dataset.address, label: focused.getAttribute("aria-label") || focused.textContent }
    : null;
  body.replaceChildren();
  for (const s of sortedSensors()) {
    const row = document.createElement("tr");
    row.dataset.address = s.address;
    row.className = PROBLEM_STATES.has(s.state) ? "problem" : "";
    cell(row, s.kind || "?");
    cell(row, s.name);
    cell(row, s.address, "mono");
    let stateText = s.waiting_for_passkey ? `${s.state}: passkey needed` : s.state;
    if (s.state_for_s !== null && s.state_for_s !== undefined) stateText += ` for ${duration(s.state_for_s)}`;
    cell(row, s.reason ? `${stateText} (${s.reason})` : stateText, `state state-${s.state.replace(" ", "-")}`);
    cell(row, s.last_seen_s === null ? "—" : `${Math.round(s.last_seen_s)} s ago`);
    cell(row, s.rssi === null ? "—" : `${s.rssi} dBm`);
    cell(row, s.battery === null ? "—" : `${s.battery} %`, s.battery !== null && s.battery < 20 ? "low" : "");
    cell(row, s.bonded ? "yes" : "no");
    cell(row, s.accepted || "no");
    firmwareCell(row, s);
    const c = s.counters;
    cell(row, c ? `${c.notifications} notif · ${c.observations} values · ${c.decode_errors} bad · ${c.reconnects} reconn.${c.undated ? ` · ${c.undated} undated` : ""}` : "—", "wrap");
    const actions = document.createElement("td");
    actions.appendChild(sensorActions(s));
    row.appendChild(actions);
    body.appendChild(row);
  }
  if (refocus) {
    const again = [...body.querySelectorAll("tr")]
      .filter((r) => r.dataset.address === refocus.address)
      .flatMap((r) => [...r.querySelectorAll("button")])
      .find((b) => (b.getAttribute("aria-label") || b.textContent) === refocus.label);
    if (again && !again.disabled) again.focus({ preventScroll: true });
  }
}

// -- vitals ----------------------------------------------------------------------------------

function onVital(event) {
  const label = event.codes.map((c) => VITAL_LABELS[c]).find(Boolean);
  if (!label) return;
  if (!state.vitals.has(event.address)) state.vitals.set(event.address, new Map());
  state.vitals.get(event.address).set(label, { text: event.text, at: event.at });
  renderVitals();
}

function renderVitals() {
  const box = $("vitals");
  box.replaceChildren();
  for (const [address, values] of state.vitals) {
    const sensor = state.sensors.find((s) => s.address === address);
    const card = document.createElement("article");
    card.className = "card";
    card.dataset.address = address;
    const title = document.createElement("h3");
    title.textContent = sensor ? `${sensor.kind} — ${sensor.name}` : address;
    card.appendChild(title);
    const list = document.createElement("dl");
    for (const [label, value] of values) {
      const dt = document.createElement("dt");
      dt.textContent = label;
      const dd = document.createElement("dd");
      dd.textContent = value.text;
      dd.dataset.vital = label;
      list.append(dt, dd);
    }
    card.appendChild(list);
    box.appendChild(card);
  }
}

// -- the waveform strips: the ECG on ECG paper, a pleth scaled to fit ---------------------------

function newStrip(canvasId, sourceId, ecgPaper) {
  return { canvasId, sourceId, ecgPaper, address: null, pending: [], trace: [], rate: 250, last: null, drawn: 0 };
}

function isEcg(codes) {
  return codes.some((c) => /^1313[2-9]\d$/.test(c));
}

function onWaveform(event) {
  const strip = isEcg(event.codes) ? state.ecg : state.pleth;
  if (strip.address === null) {
    strip.address = event.address;
    const sensor = state.sensors.find((s) => s.address === event.address);
    $(strip.sourceId).textContent = sensor ? `— ${sensor.name}` : `— ${event.address}`;
    $(strip.canvasId).closest("section").hidden = false;
  }
  if (event.address !== strip.address) return;
  if (event.period_ms) strip.rate = 1000 / event.period_ms;
  const factor = Number(event.factor);
  const origin = Number(event.origin);
  for (const raw of String(event.data).trim().split(/\s+/)) {
    const sample = Number(raw);
    strip.pending.push(Number.isFinite(sample) ? origin + factor * sample : null);
  }
}

function drawGrid(context, width, height, pxPerMm) {
  context.fillStyle = "#fff";
  context.fillRect(0, 0, width, height);
  for (let mm = 0, i = 0; mm * pxPerMm <= width; mm += 1, i += 1) {
    context.strokeStyle = i % 5 === 0 ? "#e8a0a0" : "#f6d6d6";
    context.beginPath();
    context.moveTo(Math.round(mm * pxPerMm) + 0.5, 0);
    context.lineTo(Math.round(mm * pxPerMm) + 0.5, height);
    context.stroke();
  }
  for (let mm = 0, i = 0; mm * pxPerMm <= height; mm += 1, i += 1) {
    context.strokeStyle = i % 5 === 0 ? "#e8a0a0" : "#f6d6d6";
    context.beginPath();
    context.moveTo(0, Math.round(mm * pxPerMm) + 0.5);
    context.lineTo(width, Math.round(mm * pxPerMm) + 0.5);
    context.stroke();
  }
}

function advance(strip, now, capacity) {
  // Play the samples at their own rate; fall no more than a second behind (never drop: catch up).
  if (strip.last === null) strip.last = now;
  let due = Math.floor(((now - strip.last) / 1000) * strip.rate);
  if (strip.pending.length > strip.rate) due = strip.pending.length - Math.floor(strip.rate / 2);
  if (due > 0) {
    strip.last = now;
    const taken = strip.pending.splice(0, Math.min(due, strip.pending.length));
    strip.trace.push(...taken);
    strip.drawn += taken.length;
    if (strip.trace.length > capacity) strip.trace.splice(0, strip.trace.length - capacity);
  }
}

function drawStrip(strip, now) {
  const canvas = $(strip.canvasId);
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (!width || !height) return;
  if (canvas.width !== Math.round(width * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  const pxPerMm = CSS_PX_PER_MM;
  advance(strip, now, Math.max(1, Math.floor((width / pxPerMm / MM_PER_S) * strip.rate)));
  const values = strip.trace.filter((v) => v !== null);
  let scale; // px per unit
  let middle;
  if (strip.ecgPaper) {
    drawGrid(context, width, height, pxPerMm);
    scale = MM_PER_MV * pxPerMm;
    middle = height / 2;
  } else {
    context.fillStyle = "#fff";
    context.fillRect(0, 0, width, height);
    const low = Math.min(...values, 0);
    const high = Math.max(...values, 1);
    scale = (height * 0.8) / (high - low || 1);
    middle = height / 2 + ((high + low) / 2) * scale;
  }
  context.strokeStyle = strip.ecgPaper ? "#111" : "#0b57d0";
  context.lineWidth = 1.5;
  context.beginPath();
  const pxPerSample = (MM_PER_S * pxPerMm) / strip.rate;
  let pen = false;
  strip.trace.forEach((value, i) => {
    if (value === null) {
      pen = false;
      return;
    }
    const x = i * pxPerSample;
    const y = middle - value * scale;
    if (pen) context.lineTo(x, y);
    else context.moveTo(x, y);
    pen = true;
  });
  context.stroke();
  canvas.dataset.samples = String(strip.drawn);
}

function drawStrips(now) {
  drawStrip(state.ecg, now);
  drawStrip(state.pleth, now);
  requestAnimationFrame(drawStrips);
}

// -- the gateway, its uplinks and its checks ---------------------------------------------------

function facts(list, pairs) {
  list.replaceChildren();
  for (const [label, value] of pairs) {
    const dt = document.createElement("dt");
    dt.textContent = label;
    const dd = document.createElement("dd");
    dd.textContent = value;
    list.append(dt, dd);
  }
}

function duration(seconds) {
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  return h ? `${h} h ${m} min` : `${m} min ${Math.floor(seconds % 60)} s`;
}

function bytes(n) {
  return n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(1)} GiB` : `${Math.round(n / 2 ** 20)} MiB`;
}

async function refreshGateway() {
  let g;
  try {
    g = await api("GET", "/api/gateway");
  } catch (failure) {
    return;
  }
  const patient = g.patient?.reference
    ? `${g.patient.reference} (${g.patient.source})`
    : `none: readings are held (${g.patient?.held_readings ?? 0} so far)`;
  facts($("gateway"), [
    ["Gateway", g.gateway_id],
    ["Version", g.version],
    ["Key", g.key_id || "—"],
    ["Up for", duration(g.uptime_s)],
    ["Time zone", g.timezone],
    ["Radio", g.radio ? `${g.radio.state}${g.radio.reason ? `: ${g.radio.reason}` : ""}` : "—"],
    ["Patient", patient],
    ["Assistant", g.assistant],
    ["Disk", `${bytes(g.disk.free_bytes)} free of ${bytes(g.disk.total_bytes)}; quota ${bytes(g.disk.quota_bytes)}`],
    ["Storage", g.storage ? `${g.storage.state}: ${g.storage.reason}` : "—"],
  ]);
  const rows = [];
  for (const [name, u] of Object.entries(g.uplinks)) {
    const since = u.since ? ` since ${new Date(u.since * 1000).toLocaleTimeString()}` : "";
    const link = u.connected === null || u.connected === undefined ? "" : u.connected ? `connected${since}, ` : `not connected${since}, `;
    rows.push([name.toUpperCase(), `${link}${u.delivered} delivered, ${u.dead} refused${u.last_error ? `; last error: ${u.last_error}` : ""}`]);
  }
  if (!rows.length) rows.push(["Uplinks", "none configured: readings stay on the gateway"]);
  if (g.outbox) {
    rows.push(["Outbox", `${g.outbox.pending} pending, ${g.outbox.delivered} delivered, ${g.outbox.dead} dead, ${g.outbox.held} held (no patient)`]);
  }
  facts($("uplinks"), rows);
  $("retry-dead").disabled = !g.outbox || g.outbox.dead === 0;
  const log = await api("GET", "/api/logs?lines=30").catch(() => null);
  if (log) $("log").textContent = log.lines.join("\n") || "(nothing logged yet)";
}

async function runChecks() {
  const list = $("checks");
  list.replaceChildren();
  say("Running the checks…");
  let result;
  try {
    result = await api("GET", "/api/doctor");
  } catch (failure) {
    say(`Checks: ${failure.message}`);
    return;
  }
  for (const check of result.checks) {
    const item = document.createElement("li");
    item.dataset.check = check.name;
    const level = document.createElement("span");
    level.className = `level level-${check.level}`;
    level.textContent = check.level;
    item.append(level, `${check.name}: ${check.detail}`);
    if (check.fix && check.level !== "ok") {
      const fix = document.createElement("span");
      fix.className = "fix";
      fix.textContent = check.fix;
      item.appendChild(fix);
    }
    list.appendChild(item);
  }
  say("Checks done.");
}

// -- start -----------------------------------------------------------------------------------

function connect() {
  const source = new EventSource("/api/live");
  source.addEventListener("open", () => say("Live."));
  source.addEventListener("error", () => say("The live stream was interrupted; reconnecting…"));
  source.addEventListener("sensors", (e) => {
    state.sensors = JSON.parse(e.data).sensors;
    renderSensors();
  });
  source.addEventListener("vital", (e) => onVital(JSON.parse(e.data)));
  source.addEventListener("waveform", (e) => onWaveform(JSON.parse(e.data)));
}

async function start() {
  state.ecg = newStrip("ecg", "ecg-source", true);
  state.pleth = newStrip("pleth", "pleth-source", false);
  let me;
  try {
    me = await api("GET", "/api/me");
  } catch (failure) {
    say(failure.message);
    return;
  }
  session.csrf = me.csrf_token || null;
  $("who").textContent = `${me.user} (${me.role})`;
  $("logout").addEventListener("click", async () => {
    await api("POST", "/api/logout").catch(() => null);
    location.assign("/login");
  });
  $("filter").addEventListener("change", renderSensors);
  $("sort").addEventListener("change", renderSensors);
  $("run-checks").addEventListener("click", runChecks);
  $("retry-dead").addEventListener("click", () =>
    act("Retry refused items", api("POST", "/api/outbox/retry-dead").then(refreshGateway)));
  $("patient-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const reference = $("patient-reference").value.trim();
    act(`Patient ${reference}`, api("PUT", "/api/patient", { reference }).then(refreshGateway));
  });
  $("patient-clear").addEventListener("click", () => {
    if (confirm("Clear the patient? Readings are then held until one is assigned.")) {
      act("Clear the patient", api("DELETE", "/api/patient").then(refreshGateway));
    }
  });
  connect();
  requestAnimationFrame(drawStrips);
  refreshGateway();
  setInterval(refreshGateway, 5000);
  runChecks();
}

start();
