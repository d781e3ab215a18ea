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
  post(url, { body, json, accept = "application/json", signal, method = "POST" } = {}) {
    const headers = { "X-CSRFToken": window.panel.csrfToken(), Accept: accept };
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    }
    return fetch(url, { method, body, headers, credentials: "same-origin", signal });
  },
  get(url, options = {}) {
    return window.panel.post(url, { ...options, method: "GET" });
  },
  // POST `body` (FormData) with XMLHttpRequest, calling onUpload(fraction) as the bytes go up
  // (fetch reports no upload progress). Resolves like post(): a refusal as a Response (so it is read like any other), a stream as an object
  // whose `textChunks` yields the text as it arrives. Rejects with TypeError when the panel is
  // not reached and AbortError when `signal` aborts.
  upload(url, { body, signal, onUpload }) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      const waiting = [];
      let seen = 0;
      let ended = false;
      let failure = null;
      let wake = null;
      let streaming = false;
      const contentType = () => xhr.getResponseHeader("Content-Type") || "";
      function take() {
        if (!streaming) return;
        const text = xhr.responseText.slice(seen);
        seen = xhr.responseText.length;
        if (text) waiting.push(text);
        if (wake) wake();
      }
      async function* chunks() {
        for (;;) {
          if (waiting.length) yield waiting.shift();
          else if (failure) throw failure;
          else if (ended) return;
          else await new Promise((r) => { wake = r; });
          wake = null;
        }
      }
      function fail(error) {
        failure = error;
        if (streaming) { if (wake) wake(); } else reject(error);
      }
      xhr.open("POST", url);
      xhr.setRequestHeader("X-CSRFToken", window.panel.csrfToken());
      xhr.setRequestHeader("Accept", "text/event-stream");
      xhr.upload.addEventListener("progress", (event) => {
        if (event.lengthComputable) onUpload(event.loaded / event.total);
      });
      xhr.addEventListener("readystatechange", () => {
        if (xhr.readyState !== XMLHttpRequest.HEADERS_RECEIVED) return;
        if (xhr.status === 200 && contentType().startsWith("text/event-stream")) {
          streaming = true;
          resolve({
            ok: true, status: 200, headers: { get: (name) => xhr.getResponseHeader(name) },
            textChunks: chunks(),
          });
        }
      });
      xhr.addEventListener("progress", take);
      xhr.addEventListener("load", () => {
        take();
        ended = true;
        if (wake) wake();
        if (!streaming) {
          resolve(new Response(xhr.responseText, {
            status: xhr.status || 502, headers: { "Content-Type": contentType() },
          }));
        }
      });
      xhr.addEventListener("error", () => fail(new TypeError("The panel could not be reached.")));
      xhr.addEventListener("abort", () => fail(new DOMException("Stopped", "AbortError")));
      signal.addEventListener("abort", () => xhr.abort());
      xhr.send(body);
    });
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

// The menu button opens the sidebar as a drawer on narrow screens; Escape, the backdrop or the
// button again close it, and the focus goes back to the button.
(function () {
  const button = document.querySelector("[data-action=menu]");
  const sidebar = document.getElementById("sidebar");
  const backdrop = document.querySelector("[data-action=menu-close]");
  if (!button || !sidebar) return;

  function setOpen(open) {
    document.documentElement.classList.toggle("nav-open", open);
    button.setAttribute("aria-expanded", String(open));
    backdrop.hidden = !open;
    if (open) sidebar.querySelector("a, button")?.focus();
  }

  button.addEventListener("click", () => setOpen(button.getAttribute("aria-expanded") !== "true"));
  backdrop.addEventListener("click", () => setOpen(false));
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && button.getAttribute("aria-expanded") === "true") {
      event.preventDefault(); // this Escape is spent: the chat's Escape (stop a reply) leaves it
      setOpen(false);
      button.focus();
    }
  });
})();

// The theme control (data-action="theme") goes system → light → dark and is remembered.
(function () {
  const root = document.documentElement;
  const order = ["system", "light", "dark"];
  const media = window.matchMedia("(prefers-color-scheme: dark)");

  function apply(choice) {
    const dark = choice === "dark" || (choice === "system" && media.matches);
    root.dataset.theme = dark ? "dark" : "light";
    root.dataset.themeChoice = choice;
    document.querySelectorAll("[data-action=theme]").forEach((button) => {
      button.querySelector("[data-theme-name]").textContent = button.dataset[choice];
      button.hidden = false;
    });
  }

  document.addEventListener("click", (event) => {
    const button = event.target instanceof Element ? event.target.closest("[data-action=theme]") : null;
    if (!button) return;
    const next = order[(order.indexOf(root.dataset.themeChoice || "system") + 1) % order.length];
    try {
      localStorage.setItem("theme", next);
    } catch (err) {
      // Not remembered, but still applied to this page.
    }
    apply(next);
  });
  media.addEventListener("change", () => apply(root.dataset.themeChoice || "system"));
  apply(root.dataset.themeChoice || "system");
})();
