// Behaviour shared by every page. No inline scripts anywhere: the CSP forbids them.
"use strict";

document.documentElement.classList.add("js");

// Forms that destroy something ask first: <form data-confirm="Delete this key?">.
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (!(form instanceof HTMLFormElement)) return;
  const question = form.dataset.confirm;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

// The one way the page's scripts talk to the panel. Django's CSRF token is read from a form on
// the page (the cookie is HttpOnly). `json` sends a JSON body; `body` sends FormData as is.
// Resolves to the Response; a network failure rejects (TypeError), an abort rejects (AbortError).
window.panel = {
  csrfToken() {
    const input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  },
  post(url, { body, json, accept = "application/json", signal } = {}) {
    const headers = { "X-CSRFToken": window.panel.csrfToken(), Accept: accept };
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    }
    return fetch(url, { method: "POST", body, headers, credentials: "same-origin", signal });
  },
  // The `error` of a JSON refusal, or null when the answer is not JSON (a proxy's error page).
  async errorOf(response) {
    try {
      return (await response.json()).error || null;
    } catch (err) {
      return null;
    }
  },
};
