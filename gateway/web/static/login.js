// The login form: POST /api/login, then back to the page asked for (a path on this gateway only).
"use strict";

// A clinician's home is the review page; a technician's (and an admin's) the gateway's page.
function nextPath(role) {
  const home = role === "clinician" ? "/review" : "/";
  const next = new URLSearchParams(location.search).get("next") || home;
  if (!next.startsWith("/") || next.startsWith("//")) return home;
  return next === "/" ? home : next;
}

document.getElementById("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const message = document.getElementById("message");
  message.textContent = "";
  const body = {
    username: document.getElementById("username").value,
    password: document.getElementById("password").value,
  };
  try {
    const answer = await fetch("/api/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      credentials: "same-origin",
    });
    if (answer.ok) {
      const me = await answer.json().catch(() => ({}));
      location.assign(nextPath(me.role));
      return;
    }
    const error = await answer.json().catch(() => null);
    message.textContent = error?.error?.message || `The gateway answered ${answer.status}.`;
  } catch (failure) {
    message.textContent = "The gateway cannot be reached; check the network and try again.";
  }
});
