// The clinician's page: the draft reports, one draft read and edited, approved with the
// clinician's own key (signed here, in the browser, with WebCrypto Ed25519: the key file never
// leaves this machine) or rejected with a reason. Only the JSON API is used (docs/contracts.md,
// "Review").
"use strict";

const MEDICATION_SYSTEM = "https://bedside-gateway.example/fhir/sid/medication-proposal";
const CHECK_EXTENSION = "https://bedside-gateway.example/fhir/StructureDefinition/medication-check";
const FLAG_EXTENSION = "https://bedside-gateway.example/fhir/StructureDefinition/unsupported-number";
const AI_LABELS = {
  AIAST: "Written by the AI assistant and not reviewed yet: check every statement.",
  CLINAST_AIRPT: "Drafted by the AI assistant, reviewed and asserted by a clinician.",
};

const state = { draft: null };

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

// -- the list ----------------------------------------------------------------------------------

async function loadList() {
  const status = $("filter").value;
  const query = status ? `?status=${encodeURIComponent(status)}&per_page=100` : "?per_page=100";
  const answer = await api("GET", `/api/drafts${query}`);
  const body = $("drafts").tBodies[0];
  body.replaceChildren();
  for (const draft of answer.data) {
    const row = document.createElement("tr");
    row.dataset.id = draft.id;
    for (const text of [draft.created, draft.patient || "none", draft.status, draft.version]) {
      row.appendChild(element("td", String(text)));
    }
    const open = element("button", "Open");
    open.type = "button";
    open.addEventListener("click", () => openDraft(draft.id).catch((e) => say(e.message)));
    const cell = element("td");
    cell.appendChild(open);
    row.appendChild(cell);
    if (state.draft?.id === draft.id) row.classList.add("selected");
    body.appendChild(row);
  }
  say(answer.total ? `${answer.total} report(s).` : "No reports here.");
}

// -- one draft ---------------------------------------------------------------------------------

function resources(bundle, type) {
  return (bundle.entry || []).map((e) => e.resource).filter((r) => r.resourceType === type);
}

function proposalId(request) {
  return (request.identifier || []).find((i) => i.system === MEDICATION_SYSTEM)?.value;
}

function check(request) {
  const ext = (request.extension || []).find((e) => e.url === CHECK_EXTENSION);
  const parts = Object.fromEntries((ext?.extension || []).map((p) => [p.url, p.valueBoolean ?? p.valueString]));
  return parts;
}

function observationText(o) {
  const name = o.code?.text || o.code?.coding?.[0]?.display || o.code?.coding?.[0]?.code || "?";
  if (o.valueQuantity) return `${name}: ${o.valueQuantity.value} ${o.valueQuantity.unit || ""}`;
  if (o.valueSampledData) return `${name}: waveform`;
  return name;
}

async function openDraft(id) {
  const draft = await api("GET", `/api/drafts/${encodeURIComponent(id)}`);
  state.draft = draft;
  const bundle = draft.bundle;
  const report = resources(bundle, "DiagnosticReport")[0];
  $("draft").hidden = false;
  $("draft-title").textContent = `Report ${draft.id}`;
  $("draft-facts").textContent =
    `Patient ${draft.patient || "not assigned"} · ${draft.status} · version ${draft.version} · created ${draft.created}`;
  const label = (report.meta?.security || []).map((s) => s.code).find((c) => c in AI_LABELS);
  $("ai-label").textContent = label ? AI_LABELS[label] : "";
  $("observations").replaceChildren(...draft.observations.map((o) => element("li", observationText(o))));
  const flags = (report.extension || []).filter((e) => e.url === FLAG_EXTENSION).map((e) => {
    const parts = Object.fromEntries(e.extension.map((p) => [p.url, p.valueString ?? p.valueInteger]));
    return element("li", `${parts.number} in ${parts.element} is not a measured value`);
  });
  $("flags").replaceChildren(...(flags.length ? flags : [element("li", "none")]));
  $("conclusion").value = report.conclusion || "";
  $("findings").value = (report.conclusionCode || []).map((c) => c.text).join("\n");
  const medications = resources(bundle, "MedicationRequest").map((request) => {
    const pid = proposalId(request);
    const verdict = check(request);
    const box = element("div", undefined, "proposal");
    box.dataset.id = pid;
    const text = element("input");
    text.value = request.medicationCodeableConcept?.text || "";
    text.setAttribute("aria-label", `medication ${pid}`);
    text.className = "med-text";
    const dose = element("input");
    dose.value = request.dosageInstruction?.[0]?.text || "";
    dose.setAttribute("aria-label", `dose ${pid}`);
    dose.className = "med-dose";
    const accept = element("input");
    accept.type = "checkbox";
    accept.className = "med-accept";
    accept.disabled = request.status !== "draft";
    accept.checked = request.status === "active";
    const acceptLabel = element("label", " order it");
    acceptLabel.prepend(accept);
    const note = verdict.verified
      ? element("span", `found in ${verdict.source}`, "verified")
      : element("span", `unverified: ${verdict.reason || "not checked"}`, "unverified");
    box.append(text, dose, note, acceptLabel);
    return box;
  });
  $("medications").replaceChildren(...(medications.length ? medications : [element("p", "none proposed")]));
  const open = ["partial", "final", "amended"].includes(draft.status);
  for (const form of ["edit", "approve", "reject"]) {
    for (const control of $(form).elements) control.disabled = !open;
  }
  $("transcript").replaceChildren(
    ...draft.transcript
      .filter((m) => typeof m.content === "string")
      .map((m) => element("li", `${m.role}: ${m.content}`)),
  );
  $("result").replaceChildren();
  for (const row of $("drafts").tBodies[0].rows) row.classList.toggle("selected", row.dataset.id === id);
}

function editBody() {
  const findings = $("findings").value.split("\n").map((t) => t.trim()).filter(Boolean);
  const medications = {};
  for (const box of $("medications").querySelectorAll(".proposal")) {
    medications[box.dataset.id] = {
      text: box.querySelector(".med-text").value,
      dose: box.querySelector(".med-dose").value,
    };
  }
  return {
    version: state.draft.version,
    conclusion: $("conclusion").value.trim(),
    findings: findings.map((text) => ({ text })),
    medications,
  };
}

async function saveEdit() {
  const answer = await api("PATCH", `/api/drafts/${encodeURIComponent(state.draft.id)}`, editBody());
  say(`Saved as version ${answer.version}.`);
  await openDraft(state.draft.id);
}

function changed() {
  const report = resources(state.draft.bundle, "DiagnosticReport")[0];
  const body = editBody();
  const findings = (report.conclusionCode || []).map((c) => c.text);
  if (body.conclusion !== (report.conclusion || "")) return true;
  if (JSON.stringify(body.findings.map((f) => f.text)) !== JSON.stringify(findings)) return true;
  return resources(state.draft.bundle, "MedicationRequest").some((request) => {
    const edit = body.medications[proposalId(request)];
    return edit.text !== (request.medicationCodeableConcept?.text || "") ||
      edit.dose !== (request.dosageInstruction?.[0]?.text || "");
  });
}

// -- signing (RFC 7515 compact JWS with detached payload, EdDSA / Ed25519) -------------------

function base64url(bytes) {
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

async function readKey(file) {
  let jwk;
  try {
    jwk = JSON.parse(await file.text());
  } catch {
    throw new Error("the key file is not JSON: choose the file `bedside review keygen` wrote");
  }
  if (jwk.kty !== "OKP" || jwk.crv !== "Ed25519" || !jwk.d || !jwk.kid) {
    throw new Error("the key file holds no Ed25519 private key: choose the file `bedside review keygen` wrote");
  }
  const key = await crypto.subtle.importKey(
    "jwk", { kty: "OKP", crv: "Ed25519", x: jwk.x, d: jwk.d }, { name: "Ed25519" }, false, ["sign"],
  );
  return { key, kid: jwk.kid };
}

async function detachedJws({ key, kid }, payload) {
  const header = base64url(new TextEncoder().encode(JSON.stringify({ alg: "EdDSA", kid })));
  const input = new TextEncoder().encode(`${header}.${payload}`);
  const signature = new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, key, input));
  return `${header}..${base64url(signature)}`;
}

async function approve() {
  const file = $("key").files[0];
  if (!file) throw new Error("choose your key file first");
  const signingKey = await readKey(file);
  const medications = {};  // read before a save redraws the form
  for (const box of $("medications").querySelectorAll(".proposal")) {
    const accept = box.querySelector(".med-accept");
    if (!accept.disabled) medications[box.dataset.id] = accept.checked ? "accept" : "reject";
  }
  if (changed()) await saveEdit();
  const id = encodeURIComponent(state.draft.id);
  const offer = await api("POST", `/api/drafts/${id}/offer`, {
    version: state.draft.version, action: "approve", medications,
  });
  const signature = await detachedJws(signingKey, offer.payload);
  await api("POST", `/api/drafts/${id}/approve`, { decision: offer.decision, signature });
  await openDraft(state.draft.id);
  const link = element("a", "Download the signed PDF");
  link.href = `/api/drafts/${id}/pdf`;
  link.id = "pdf";
  $("result").replaceChildren(element("span", `Approved: the report is ${state.draft.status}. `), link);
  say("Approved and signed.");
  await loadList();
}

async function reject() {
  const id = encodeURIComponent(state.draft.id);
  await api("POST", `/api/drafts/${id}/reject`, {
    version: state.draft.version, reason: $("reason").value.trim(),
  });
  await openDraft(state.draft.id);
  $("result").textContent = `Rejected: the report is ${state.draft.status}.`;
  say("Rejected.");
  await loadList();
}

function guarded(action) {
  return (event) => {
    event.preventDefault();
    $("result").textContent = "";
    action().catch((error) => {
      $("result").textContent = `Not done: ${error.message}`;
    });
  };
}

async function start() {
  const me = await api("GET", "/api/me");
  session.csrf = me.csrf_token || null;
  $("who").textContent = `${me.user} (${me.role})`;
  $("logout").addEventListener("click", async () => {
    await api("POST", "/api/logout");
    location.assign("/login?next=/review");
  });
  $("filter").addEventListener("change", () => loadList().catch((e) => say(e.message)));
  $("edit").addEventListener("submit", guarded(saveEdit));
  $("approve").addEventListener("submit", guarded(approve));
  $("reject").addEventListener("submit", guarded(reject));
  await loadList();
}

start().catch((error) => say(`The page could not load: ${error.message}`));
