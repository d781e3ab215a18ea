// Loaded in <head> without defer, so the remembered theme applies before the first paint.
// data-theme on <html> is the theme in effect (light or dark); data-theme-choice is what the
// user picked (system, light or dark). js/panel.js has the control that changes them.
"use strict";
(function () {
  let choice = "system";
  try {
    choice = localStorage.getItem("theme") || "system";
  } catch (err) {
    // Storage refused (a privacy setting): follow the system.
  }
  const dark = choice === "dark" ||
    (choice !== "light" && window.matchMedia("(prefers-color-scheme: dark)").matches);
  document.documentElement.dataset.theme = dark ? "dark" : "light";
  document.documentElement.dataset.themeChoice = choice;
})();
