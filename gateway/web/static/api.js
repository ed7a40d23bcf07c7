// What both pages share: the element helper, the status line and the JSON API with the session's
// CSRF token on every state-changing request (a 401 sends the browser to the login page).
"use strict";

const session = { csrf: null };

function $(id) {
  return document.getElementById(id);
}

function say(text) {
  $("status").textContent = text;
}

async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (method !== "GET" && session.csrf) headers["X-CSRF-Token"] = session.csrf;
  const answer = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (answer.status === 401) {
    location.assign(`/login?next=${encodeURIComponent(location.pathname)}`);
    throw new Error("logged out");
  }
  const data = answer.status === 204 ? null : await answer.json().catch(() => null);
  if (!answer.ok) throw new Error(data?.error?.message || `the gateway answered ${answer.status}`);
  return data;
}
