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

// Read Django's CSRF token from a form on the page (the cookie is HttpOnly).
window.panelCsrfToken = function panelCsrfToken() {
  const input = document.querySelector("input[name=csrfmiddlewaretoken]");
  return input ? input.value : "";
};
