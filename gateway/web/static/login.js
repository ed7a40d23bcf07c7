// The login form: POST /api/login, then back to the page asked for (a path on this gateway only).
"use strict";

function nextPath() {
  const next = new URLSearchParams(location.search).get("next") || "/";
  return next.startsWith("/") && !next.startsWith("//") ? next : "/";
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
      location.assign(nextPath());
      return;
    }
    const error = await answer.json().catch(() => null);
    message.textContent = error?.error?.message || `The gateway answered ${answer.status}.`;
  } catch (failure) {
    message.textContent = "The gateway cannot be reached; check the network and try again.";
  }
});
