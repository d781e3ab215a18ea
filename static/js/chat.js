// The chat: sends a message to POST /ai-chat/stream/ and reads the server-sent events with
// fetch + ReadableStream, so the reply grows word by word. While streaming, the reply is shown
// as plain text (textContent: nothing in it can run); when it is done, the server's sanitized
// HTML replaces it. The reply is generated on the server whether or not this page stays:
// Stop asks the server to stop it (replies.js), and a dropped stream is followed again from
// the last event id received.
"use strict";

(function () {
  const form = document.getElementById("composer");
  if (!form) return;
  const strings = document.getElementById("i18n-chat").dataset;
  const input = document.getElementById("chat-input");
  const list = document.getElementById("messages");
  const sendButton = document.getElementById("chat-send");
  const stopButton = document.getElementById("chat-stop");
  const status = document.getElementById("chat-status");
  const keySelect = document.getElementById("chat-key");
  const modelInput = document.getElementById("chat-model");
  let controller = null;

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
    if (!busy) status.textContent = "";
  }

  function conversationInput() {
    return form.querySelector("input[name=conversation]");
  }

  function rememberConversation(id, title) {
    const field = conversationInput();
    if (field.value) return;
    field.value = id;
    const url = `/ai-chat/c/${id}/`;
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
        let id = null;
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) continue; // keep-alive comment
          if (line.startsWith("id:")) id = line.slice(3).trim();
          else if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (data.length) onEvent(name, JSON.parse(data.join("\n")), id);
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
    let lastId = "0"; // the last event id received: where a reconnection goes on from
    try {
      const response = await fetch(form.action, {
        method: "POST",
        body,
        headers: { "X-CSRFToken": window.panelCsrfToken(), Accept: "text/event-stream" },
        credentials: "same-origin",
        signal: controller.signal,
      });
      if (!response.ok || !(response.headers.get("Content-Type") || "").startsWith("text/event-stream")) {
        let message = `${response.status}`;
        try { message = (await response.json()).error || message; } catch (err) { /* not JSON */ }
        // Nothing was saved: take the bubbles back and leave the text in the input.
        reply.article.remove();
        if (sentBubble) sentBubble.remove();
        status.textContent = message;
        status.classList.add("error");
        finished = true;
        return;
      }
      if (!regenerate && !resume) input.value = "";
      status.classList.remove("error");
      const parse = sseParser((name, data, id) => {
        if (id !== null) lastId = id;
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
          reply.article.className = `msg assistant ${data.status || "complete"}`;
          reply.body.removeAttribute("dir");
          reply.body.innerHTML = data.html; // sanitized on the server (markdown-it + nh3)
          addCopyButtons(reply.body);
          reply.meta.textContent = describeUsage(data);
          if (data.status === "stopped") reply.meta.prepend(`${strings.stopped} · `);
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
      if (!finished && reply.article.dataset.messageId && window.bseparReplies) {
        // The connection dropped, not the reply: follow it again from the last id.
        finished = true;
        window.bseparReplies.follow(reply.article, reply.article.dataset.messageId, lastId, () =>
          addRegenerate(reply.article),
        );
      } else if (!finished) {
        reply.meta.textContent = strings.network;
      }
    } catch (err) {
      if (err.name === "AbortError") {
        reply.article.className = "msg assistant live stopped";
        reply.meta.textContent = strings.stopped;
        addRegenerate(reply.article);
      } else if (reply.article.dataset.messageId && window.bseparReplies) {
        // The connection dropped, not the reply: follow it again from the last id.
        window.bseparReplies.follow(reply.article, reply.article.dataset.messageId, lastId, () =>
          addRegenerate(reply.article),
        );
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
        const response = await fetch(button.dataset.url, {
          method: "POST", body, credentials: "same-origin",
          headers: { "X-CSRFToken": window.panelCsrfToken(), Accept: "application/json" },
        });
        const data = await response.json();
        if (!response.ok) throw new Error(data.error || String(response.status));
        const holder = element("div");
        holder.innerHTML = data.html; // rendered and escaped by the server's template
        card.replaceWith(holder.firstElementChild);
        if (data.continue) send({ resume: true });
      } catch (err) {
        card.querySelectorAll("button").forEach((b) => { b.disabled = false; });
        status.textContent = err.message;
        status.classList.add("error");
      }
    } else if (button.dataset.undoUrl) {
      button.disabled = true;
      const response = await fetch(button.dataset.undoUrl, {
        method: "POST", credentials: "same-origin",
        headers: { "X-CSRFToken": window.panelCsrfToken(), "Content-Type": "application/json" },
        body: "{}",
      });
      const data = await response.json();
      if (response.ok) {
        button.replaceWith(element("span", "muted small", strings.undone));
      } else {
        button.disabled = false;
        status.textContent = data.error;
        status.classList.add("error");
      }
    }
  });

  stopButton.addEventListener("click", () => {
    // The reply runs on the server: Stop asks it to stop; the stream then ends with `done`.
    const live = list.querySelector("article.live[data-message-id]");
    if (live && window.bseparReplies) window.bseparReplies.stop(live.dataset.messageId);
    else if (controller) controller.abort();
  });
  // Esc stops a streaming reply too.
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && controller && !stopButton.hidden) stopButton.click();
  });

  // Existing messages: copy buttons, and Regenerate on the last reply.
  addCopyButtons(list);
  const articles = list.querySelectorAll("article.msg");
  const last = articles[articles.length - 1];
  if (last && last.dataset.role === "assistant") addRegenerate(last);
  scrollDown();
})();
