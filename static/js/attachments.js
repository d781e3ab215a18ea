// Attachments in the composer: the attach button, drag and drop onto the composer, and pasting
// an image. Each file becomes a chip (name, size, a thumbnail for images) that can be removed
// before sending. chat.js asks this module for the files when it sends (addTo) and tells it
// how the upload went (uploaded): on success the chips move onto the sent message; on a
// refusal they stay, like the typed text. The server checks every file again (by content).
"use strict";

(function () {
  const form = document.getElementById("composer");
  const box = document.getElementById("attachments");
  if (!form || !box) return;
  const strings = document.getElementById("i18n-attachments").dataset;
  const picker = document.getElementById("attach-input");
  const chips = document.getElementById("attach-chips");
  const progress = document.getElementById("attach-progress");
  const button = form.querySelector("[data-action=attach]");
  const maxFiles = Number(box.dataset.maxFiles);
  const maxBytes = Number(box.dataset.maxBytes);
  const alertBox = document.getElementById("chat-alert");
  const lang = document.documentElement.lang || undefined;
  let files = [];

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function size(bytes) {
    const number = new Intl.NumberFormat(lang, { maximumFractionDigits: 1 });
    if (bytes < 1024) return `${number.format(bytes)} ${strings.bytes}`;
    if (bytes < 1024 * 1024) return `${number.format(bytes / 1024)} ${strings.kb}`;
    return `${number.format(bytes / 1024 / 1024)} ${strings.mb}`;
  }

  function warn(text) {
    alertBox.textContent = text;
    alertBox.hidden = false;
  }

  function add(list) {
    for (const file of list) {
      if (files.length >= maxFiles) {
        warn(strings.tooMany.replace("{n}", maxFiles));
        break;
      }
      if (file.size > maxBytes) {
        warn(strings.tooBig.replace("{name}", file.name).replace("{size}", size(maxBytes)));
        continue;
      }
      const entry = { file, url: "" };
      files.push(entry);
      if (file.type.startsWith("image/")) thumbnail(entry);
    }
    render();
  }

  // The thumbnail as a data: URL (the page's CSP allows data: images, not blob: ones).
  function thumbnail(entry) {
    const reader = new FileReader();
    reader.addEventListener("load", () => {
      entry.url = reader.result;
      render();
    });
    reader.readAsDataURL(entry.file);
  }

  function chip(entry, removable) {
    const item = element("li", "attach-chip");
    item.dataset.attachmentChip = "";
    if (entry.url) {
      const img = element("img");
      img.src = entry.url;
      img.alt = "";
      item.append(img);
    }
    const name = element("span", "attach-name", entry.file.name);
    name.dir = "auto";
    item.append(name, element("span", "attach-size muted", size(entry.file.size)));
    if (removable) {
      const remove = element("button", "icon-button attach-remove", "×");
      remove.type = "button";
      remove.dataset.action = "remove-attachment";
      remove.setAttribute("aria-label", strings.remove.replace("{name}", entry.file.name));
      remove.addEventListener("click", () => {
        files = files.filter((f) => f !== entry);
        render();
        document.getElementById("chat-input").focus();
      });
      item.append(remove);
    }
    return item;
  }

  function render() {
    chips.replaceChildren(...files.map((entry) => chip(entry, true)));
    chips.hidden = files.length === 0;
  }

  button.addEventListener("click", () => picker.click());
  picker.addEventListener("change", () => {
    add(picker.files);
    picker.value = "";
  });

  // Drag and drop anywhere on the composer.
  form.addEventListener("dragover", (event) => {
    if (!event.dataTransfer || !Array.from(event.dataTransfer.types).includes("Files")) return;
    event.preventDefault();
    form.classList.add("dropping");
  });
  form.addEventListener("dragleave", (event) => {
    if (!form.contains(event.relatedTarget)) form.classList.remove("dropping");
  });
  form.addEventListener("drop", (event) => {
    form.classList.remove("dropping");
    if (!event.dataTransfer || event.dataTransfer.files.length === 0) return;
    event.preventDefault();
    add(event.dataTransfer.files);
  });

  // Pasting an image (a screenshot) into the message box attaches it; text pastes as text.
  document.getElementById("chat-input").addEventListener("paste", (event) => {
    const pasted = Array.from(event.clipboardData?.files || []);
    if (pasted.length === 0) return;
    event.preventDefault();
    add(pasted.map((file) =>
      // A screenshot arrives as "image.png" in every paste: number them so chips differ.
      file.name === "image.png" ? new File([file], `pasted-${Date.now()}.png`, { type: file.type }) : file));
  });

  // The upload's progress: the bar (role="progressbar", aria-valuenow in percent) and the
  // percentage beside it, in the page's digits. Without a value the bar is indeterminate.
  const percent = document.getElementById("attach-percent");
  const percentFormat = new Intl.NumberFormat(lang, { style: "percent" });
  function showProgress(fraction) {
    const box = progress.parentElement;
    box.hidden = false;
    if (fraction === null) {
      progress.removeAttribute("value");
      progress.removeAttribute("aria-valuenow");
      percent.textContent = "";
      return;
    }
    const value = Math.round(Math.min(1, Math.max(0, fraction)) * 100);
    progress.value = value;
    progress.setAttribute("aria-valuenow", String(value));
    percent.textContent = percentFormat.format(value / 100);
  }

  window.chatAttachments = {
    // Put the files in the request and show the progress bar (chat.js then reports the
    // bytes sent through progress()).
    addTo(body) {
      for (const entry of files) body.append("files", entry.file, entry.file.name);
      if (files.length) showProgress(null);
    },
    // The share of the request's bytes sent so far (0 to 1).
    progress(fraction) {
      showProgress(fraction);
    },
    // The server answered: on success, the sent message shows its files and the chips go.
    uploaded(bubble, ok) {
      progress.parentElement.hidden = true;
      if (!ok || files.length === 0) return;
      if (bubble) {
        const list = element("ul", "attachments");
        list.append(...files.map((entry) => chip(entry, false)));
        bubble.prepend(list);
      }
      files = [];
      render();
    },
  };
})();
