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
