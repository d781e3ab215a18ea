// The add-key wizard (provider → key → live test → save) and the per-key Test buttons.
// Without JavaScript the wizard is one plain form that POSTs to /api-manager/keys/add/.
"use strict";

(function () {
  const strings = document.getElementById("i18n-keys")?.dataset || {};

  function describe(result) {
    if (result.ok) {
      const models = (result.models || []).slice(0, 8).join(", ");
      return `${strings.ok} ${models}`;
    }
    return `${strings.failed} ${result.error}`;
  }

  async function postForm(url, body) {
    return (await window.panel.post(url, { body })).json();
  }

  // Per-key Test buttons.
  document.querySelectorAll("[data-test-url]").forEach((button) => {
    button.addEventListener("click", async () => {
      const out = button.closest("td").querySelector("[data-test-result]");
      out.textContent = strings.testing;
      out.className = "small test-result";
      button.disabled = true;
      try {
        const result = await postForm(button.dataset.testUrl, new FormData());
        out.textContent = describe(result);
        out.classList.add(result.ok ? "ok" : "error");
      } catch (err) {
        out.textContent = strings.network;
        out.classList.add("error");
      } finally {
        button.disabled = false;
      }
    });
  });

  // A key's edit page: the model field offers the models the key's provider lists.
  const modelList = document.querySelector("datalist[data-models-url]");
  if (modelList && !modelList.options.length) {
    window.panel.get(modelList.dataset.modelsUrl)
      .then((response) => response.json())
      .then((data) => modelList.replaceChildren(...(data.models || []).map((m) => Object.assign(document.createElement("option"), { value: m }))))
      .catch(() => {}); // the field still takes any name
  }

  // The wizard.
  const wizard = document.getElementById("key-wizard");
  if (!wizard) return;
  const steps = Array.from(wizard.querySelectorAll("[data-step]"));
  const labels = Array.from(wizard.querySelectorAll("[data-step-label]"));
  // A form that came back with errors opens on the step that holds the first one.
  const firstError = wizard.querySelector(".errorlist");
  let current = 0;
  if (firstError) current = steps.indexOf(firstError.closest("[data-step]"));
  if (current < 0) current = 1;

  function show(index) {
    current = index;
    steps.forEach((step, i) => { step.hidden = i !== index; });
    labels.forEach((label, i) => label.classList.toggle("current", i === index));
    const focusable = steps[index].querySelector("input:not([type=hidden]), button");
    if (focusable && document.activeElement !== document.body) focusable.focus();
  }

  function stepValid(index) {
    const inputs = steps[index].querySelectorAll("input");
    for (const input of inputs) {
      if (!input.checkValidity()) {
        input.reportValidity();
        return false;
      }
    }
    return true;
  }

  wizard.addEventListener("click", (event) => {
    const target = event.target;
    if (!(target instanceof HTMLElement)) return;
    if (target.matches("[data-next]") && stepValid(current)) {
      show(Math.min(current + 1, steps.length - 1));
    } else if (target.matches("[data-back]")) {
      show(Math.max(current - 1, 0));
    }
  });

  // Enter in a text field moves to the next step instead of submitting early.
  wizard.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && event.target instanceof HTMLInputElement && current < steps.length - 1) {
      event.preventDefault();
      if (stepValid(current)) show(current + 1);
    }
  });

  const checkButton = wizard.querySelector("[data-check]");
  const checkResult = wizard.querySelector("[data-check-result]");
  checkButton.addEventListener("click", async () => {
    checkResult.textContent = strings.testing;
    checkResult.className = "test-result";
    checkButton.disabled = true;
    try {
      const result = await postForm(wizard.dataset.checkUrl, new FormData(wizard));
      checkResult.textContent = describe(result);
      checkResult.classList.add(result.ok ? "ok" : "error");
      if (result.ok) {
        const list = document.getElementById("model-options");
        list.replaceChildren(...(result.models || []).map((m) => Object.assign(document.createElement("option"), { value: m })));
      }
    } catch (err) {
      checkResult.textContent = strings.network;
      checkResult.classList.add("error");
    } finally {
      checkButton.disabled = false;
    }
  });

  show(current);
})();
