// The chat: sends a message to POST /ai-chat/stream/ and reads the server-sent events with
// fetch + ReadableStream, so the reply grows word by word. While streaming, the reply is shown
// as plain text (textContent: nothing in it can run); when it is done, the server's sanitized
// HTML replaces it. Stop aborts the request; the server then closes the provider's stream and
// keeps what arrived.
"use strict";

(function () {
  const form = document.getElementById("composer");
  if (!form) return;
  const strings = document.getElementById("i18n-chat").dataset;
  const input = document.getElementById("chat-input");
  const list = document.getElementById("messages");
  const sendButton = document.getElementById("chat-send");
  const stopButton = document.getElementById("chat-stop");
  const alertBox = document.getElementById("chat-alert");
  const keySelect = document.getElementById("chat-key");
  const modelInput = document.getElementById("chat-model");
  let controller = null;

  // -- the conversation list, behind a button on narrow screens ---------------------------
  const listButton = document.querySelector("[data-action=conversations]");
  listButton?.addEventListener("click", () => {
    const open = listButton.getAttribute("aria-expanded") !== "true";
    listButton.setAttribute("aria-expanded", String(open));
    document.querySelector(".chat").classList.toggle("list-open", open);
  });

  // -- key / model picker: the model field shows the key's default ------------------------
  function syncModelPlaceholder() {
    const option = keySelect && keySelect.selectedOptions[0];
    if (option) modelInput.placeholder = option.dataset.model || "model";
  }
  if (keySelect) keySelect.addEventListener("change", syncModelPlaceholder);
  syncModelPlaceholder();

  // -- helpers ---------------------------------------------------------------------------
  function scrollDown() {
    list.scrollTop = list.scrollHeight;
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function addCopyButtons(root) {
    root.querySelectorAll("pre").forEach((pre) => {
      if (pre.querySelector(".copy-btn")) return;
      const button = element("button", "copy-btn", strings.copy);
      button.type = "button";
      button.addEventListener("click", async () => {
        const code = pre.querySelector("code") || pre;
        try {
          await navigator.clipboard.writeText(code.innerText);
          button.textContent = strings.copied;
          setTimeout(() => { button.textContent = strings.copy; }, 1500);
        } catch (err) {
          button.textContent = "✕";
        }
      });
      pre.appendChild(button);
    });
  }

  function userBubble(text) {
    const article = element("article", "msg user complete");
    article.dataset.role = "user";
    const body = element("div", "body", text);
    body.dir = "auto";
    article.appendChild(body);
    return article;
  }

  function replyBubble() {
    const article = element("article", "msg assistant live streaming");
    article.dataset.role = "assistant";
    const body = element("div", "body md");
    body.dir = "auto";
    const meta = element("div", "meta", strings.thinking);
    article.append(body, meta);
    return { article, body, meta };
  }

  function setBusy(busy) {
    sendButton.disabled = busy;
    stopButton.hidden = !busy;
  }

  // A refusal stays in sight by the message box until the next try (role="alert" reads it out).
  function showAlert(message) {
    alertBox.textContent = message;
    alertBox.hidden = false;
  }

  function clearAlert() {
    alertBox.hidden = true;
    alertBox.textContent = "";
  }

  // Plain words for a refusal: the server's reason, and what to do where the status says it.
  async function describeRefusal(response) {
    const said = await window.panel.errorOf(response);
    const hint = { 413: strings.hintTooLong, 429: strings.hintBusy }[response.status];
    if (said) return hint ? `${said} ${hint}` : said;
    return hint || strings.refused.replace("{status}", response.status);
  }

  function conversationInput() {
    return form.querySelector("input[name=conversation]");
  }

  function rememberConversation(id, title) {
    const field = conversationInput();
    if (field.value) return;
    field.value = id;
    // The server gives the address pattern (built with {% url %} for conversation 0).
    const url = form.dataset.conversationUrl.replace(/\/0\/$/, `/${id}/`);
    window.history.replaceState(null, "", url);
    const ul = document.getElementById("conversation-list");
    if (ul) {
      const li = element("li");
      const a = element("a", "active", title || strings.untitled);
      a.href = url;
      a.dir = "auto";
      li.appendChild(a);
      ul.prepend(li);
    }
    document.querySelector("[data-empty-list]")?.remove();
  }

  // Parse server-sent events from a stream of text: calls onEvent(name, data) per event.
  function sseParser(onEvent) {
    let buffer = "";
    return (text) => {
      buffer += text;
      let end;
      while ((end = buffer.indexOf("\n\n")) !== -1) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let name = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) continue; // keep-alive comment
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (data.length) onEvent(name, JSON.parse(data.join("\n")));
      }
    };
  }

  // Numbers in the page's language (Persian digits in Persian).
  const numberFormat = new Intl.NumberFormat(document.documentElement.lang || undefined);

  function describeUsage(data) {
    const usage = data.usage || {};
    const n = (value) => numberFormat.format(value ?? 0);
    const parts = [`${n(usage.input_tokens)} → ${n(usage.output_tokens)} ${strings.tokens}`];
    if (data.total_ms) parts.push(`${n(data.total_ms)} ms`);
    return parts.join(" · ");
  }

  function addRegenerate(article) {
    document.querySelectorAll("[data-regenerate]").forEach((b) => b.remove());
    const button = element("button", "link small", strings.regenerate);
    button.type = "button";
    button.dataset.regenerate = "1";
    button.addEventListener("click", () => send({ regenerate: true }));
    article.querySelector(".meta").append(" · ", button);
  }

  // -- sending ---------------------------------------------------------------------------
  async function send({ regenerate = false, resume = false } = {}) {
    if (controller) return;
    const text = resume ? "" : input.value;
    if (!regenerate && !resume && !text.trim()) {
      input.focus();
      return;
    }
    const body = new FormData(form);
    if (regenerate) {
      body.set("regenerate", "1");
      body.set("message", "");
      const last = list.querySelector("article.msg:last-of-type");
      if (last && last.dataset.role === "assistant") last.remove();
    } else if (resume) {
      body.set("continue", "1");
      body.set("message", "");
    }
    document.querySelector("[data-empty-chat]")?.remove();
    let sentBubble = null;
    if (!regenerate && !resume) {
      sentBubble = userBubble(text);
      list.appendChild(sentBubble);
    }
    const reply = replyBubble();
    list.appendChild(reply.article);
    scrollDown();
    controller = new AbortController();
    setBusy(true);
    let finished = false;
    let received = "";
    let answered = false;
    clearAlert();
    try {
      const response = await window.panel.post(form.action, {
        body, accept: "text/event-stream", signal: controller.signal,
      });
      answered = true;
      if (!response.ok || !(response.headers.get("Content-Type") || "").startsWith("text/event-stream")) {
        // Nothing was saved: take the bubbles back and leave the text in the input.
        reply.article.remove();
        if (sentBubble) sentBubble.remove();
        showAlert(await describeRefusal(response));
        finished = true;
        return;
      }
      if (!regenerate && !resume) input.value = "";
      const parse = sseParser((name, data) => {
        if (name === "meta") {
          rememberConversation(data.conversation, text.trim().slice(0, 80));
          reply.article.dataset.messageId = data.message;
        } else if (name === "delta") {
          received += data.text;
          reply.body.textContent = received;
          reply.meta.textContent = "";
          scrollDown();
        } else if (name === "done") {
          finished = true;
          reply.article.className = "msg assistant complete";
          reply.body.removeAttribute("dir");
          reply.body.innerHTML = data.html; // sanitized on the server (markdown-it + nh3)
          addCopyButtons(reply.body);
          reply.meta.textContent = describeUsage(data);
          if (data.cards_html) {
            // Approval cards, rendered (and escaped) by the server's templates.
            const cards = element("div", "tool-cards");
            cards.innerHTML = data.cards_html;
            reply.body.after(cards);
          }
          addRegenerate(reply.article);
        } else if (name === "error") {
          finished = true;
          reply.article.className = "msg assistant live error";
          reply.meta.textContent = "";
          reply.meta.appendChild(element("span", "status-error", data.message));
          addRegenerate(reply.article);
        }
      });
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        parse(value);
      }
      if (!finished) {
        reply.meta.textContent = strings.network;
      }
    } catch (err) {
      if (err.name === "AbortError") {
        reply.article.className = "msg assistant live stopped";
        reply.meta.textContent = strings.stopped;
        addRegenerate(reply.article);
      } else if (!answered) {
        // The panel was never reached: nothing was saved, so the message goes back to the box.
        reply.article.remove();
        if (sentBubble) sentBubble.remove();
        showAlert(strings.unreachable);
      } else {
        reply.meta.textContent = strings.network;
      }
    } finally {
      controller = null;
      setBusy(false);
      input.focus();
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });

  // Enter sends; Shift+Enter breaks the line (and IME composition is left alone).
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });

  // Approval cards: Run / Apply / Reject, and Undo of an applied change.
  list.addEventListener("click", async (event) => {
    const button = event.target instanceof HTMLElement ? event.target.closest("button") : null;
    if (!button) return;
    if (button.dataset.toolDecision) {
      const card = button.closest(".tool-card");
      card.querySelectorAll("button").forEach((b) => { b.disabled = true; });
      const body = new FormData();
      body.set("decision", button.dataset.toolDecision);
      try {
        const response = await window.panel.post(button.dataset.url, { body });
        const data = await response.json();
        if (!response.ok) throw new Error(data.error || String(response.status));
        const holder = element("div");
        holder.innerHTML = data.html; // rendered and escaped by the server's template
        card.replaceWith(holder.firstElementChild);
        if (data.continue) send({ resume: true });
      } catch (err) {
        card.querySelectorAll("button").forEach((b) => { b.disabled = false; });
        showAlert(err instanceof TypeError ? strings.unreachable : err.message);
      }
    } else if (button.dataset.undoUrl) {
      button.disabled = true;
      let error;
      try {
        const response = await window.panel.post(button.dataset.undoUrl, { json: {} });
        if (response.ok) {
          button.replaceWith(element("span", "muted small", strings.undone));
          return;
        }
        error = (await window.panel.errorOf(response)) || String(response.status);
      } catch (err) {
        // The panel was not reached: the button must work again, or the change can never be undone.
        error = strings.unreachable;
      }
      button.disabled = false;
      showAlert(error);
    }
  });

  stopButton.addEventListener("click", () => {
    if (controller) controller.abort();
  });

  // Existing messages: copy buttons, and Regenerate on the last reply.
  addCopyButtons(list);
  const articles = list.querySelectorAll("article.msg");
  const last = articles[articles.length - 1];
  if (last && last.dataset.role === "assistant") addRegenerate(last);
  scrollDown();
})();
