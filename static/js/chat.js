// The chat: sends a message to POST /ai-chat/stream/ and reads the server-sent events with
// fetch + ReadableStream, so the reply grows word by word. While streaming, the reply is
// rendered as Markdown in the browser (js/markdown.js: markdown-it, then DOMPurify), at most
// once per animation frame; when it is done, the server's sanitized HTML replaces it. The reply
// is generated on the server whether or not this page stays: Stop asks the server to stop it
// (replies.js), and a dropped stream is followed again from the last event id received.
// A send with files goes up through window.panel.upload, which reports upload progress (fetch
// does not); its answer is read as it arrives and goes through the same SSE parser.
// Edit (data-action="edit") turns a user message into an editor; sending it posts `edit`
// with the message's id and `drop_attachments` for the files removed from it.
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

  // The model field offers the selected key's models (listed by its provider, cached by the
  // panel), fetched when the field is first used; any other name can still be typed.
  const modelLists = new Map();
  async function offerModels() {
    const url = keySelect && keySelect.selectedOptions[0]?.dataset.modelsUrl;
    const datalist = document.getElementById("chat-models");
    if (!url || !datalist) return;
    if (!modelLists.has(url)) {
      modelLists.set(url, window.panel.get(url)
        .then((r) => r.json()).then((d) => d.models || []).catch(() => []));
    }
    const models = await modelLists.get(url);
    datalist.replaceChildren(...models.map((m) => Object.assign(document.createElement("option"), { value: m })));
  }
  if (modelInput) modelInput.addEventListener("focus", offerModels);

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

  // Copy buttons show their label through CSS (data-label), so a message's innerText, which
  // the whole-message Copy takes, holds no "Copy" of the code blocks inside it.
  function copyButton(className, getText) {
    const button = element("button", className);
    button.type = "button";
    button.dataset.label = strings.copy;
    button.setAttribute("aria-label", strings.copy);
    button.addEventListener("click", () => copyText(button, getText()));
    return button;
  }

  async function copyText(button, text) {
    try {
      await navigator.clipboard.writeText(text);
      button.dataset.label = strings.copied;
    } catch (err) {
      button.dataset.label = "✕";
    }
    setTimeout(() => { button.dataset.label = strings.copy; }, 1500);
  }

  // Code blocks: a Copy button, and their language (class "language-x") shown by CSS from
  // data-lang, so neither is part of the text a Copy takes.
  function addCopyButtons(root) {
    root.querySelectorAll("pre").forEach((pre) => {
      if (pre.querySelector(".copy-btn")) return;
      const code = pre.querySelector("code");
      const language = /(?:^|\s)language-(\S+)/.exec(code ? code.className : "");
      if (language) pre.dataset.lang = language[1];
      pre.appendChild(copyButton("copy-btn", () => (code || pre).innerText));
    });
  }

  // -- the streaming reply as Markdown, once per animation frame -------------------------
  // Deltas often come faster than frames: each one only records the text, and one frame paints
  // the latest. Without the Markdown scripts the reply stays plain text (textContent).
  let painting = null;
  let frame = 0;
  function paint() {
    frame = 0;
    const reply = painting;
    if (!reply || !reply.live) return;
    const html = window.panelMarkdown ? window.panelMarkdown.render(reply.text) : null;
    if (html === null) {
      reply.body.classList.add("plain");
      reply.body.textContent = reply.text;
    } else {
      reply.body.removeAttribute("dir"); // every block carries its own direction
      reply.body.innerHTML = html; // sanitized by DOMPurify with the server's allow-lists
      addCopyButtons(reply.body);
    }
    scrollDown();
  }
  function renderSoon(reply) {
    painting = reply;
    if (!frame) frame = window.requestAnimationFrame(paint);
  }
  // KaTeX arrives after the first math: the live reply is painted again with it.
  window.panelMarkdown?.onMath(() => { if (painting) renderSoon(painting); });

  // Every message gets a Copy of the whole message (data-action="copy").
  function addMessageTools(article) {
    if (article.querySelector("[data-action=copy]")) return;
    const body = article.querySelector(".body");
    const button = copyButton("link small", () => body.innerText.trim());
    button.dataset.action = "copy";
    const tools = element("div", "msg-tools");
    tools.appendChild(button);
    if (article.dataset.role === "user") {
      const edit = element("button", "link small", strings.edit);
      edit.type = "button";
      edit.dataset.action = "edit";
      edit.addEventListener("click", () => openEditor(article));
      tools.append(" · ", edit);
    }
    article.appendChild(tools);
  }

  function userBubble(text) {
    const article = element("article", "msg user complete");
    article.dataset.role = "user";
    const body = element("div", "body", text);
    body.dir = "auto";
    article.appendChild(body);
    addMessageTools(article);
    return article;
  }

  function replyBubble() {
    const article = element("article", "msg assistant live streaming");
    article.dataset.role = "assistant";
    const body = element("div", "body md");
    body.dir = "auto";
    const meta = element("div", "meta", strings.thinking);
    article.append(body, meta);
    addMessageTools(article);
    return { article, body, meta, text: "", live: true };
  }

  // A reply being written: this page's own stream, or one followed by replies.js (a reply
  // still generating when the page opened). Stop and Esc act on either.
  function liveReply() {
    return list.querySelector("article.live[data-message-id]");
  }
  function syncStop() {
    stopButton.hidden = !(controller || liveReply());
  }
  function setBusy(busy) {
    sendButton.disabled = busy;
    syncStop();
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
    // The header names the new conversation and offers Rename and Delete at once.
    const heading = document.getElementById("chat-title");
    document.title = document.title.replace(heading.textContent, title || strings.untitled);
    heading.textContent = title || strings.untitled;
    document.querySelectorAll("[data-needs-conversation]").forEach((node) => {
      node.hidden = false;
      const target = node.matches("form") ? node : node.querySelector("form");
      target.setAttribute("action", target.getAttribute("action").replace("/0/", `/${id}/`));
      const titleInput = target.querySelector("input[name=title]");
      if (titleInput) titleInput.value = title;
    });
    const ul = document.getElementById("conversation-list");
    if (ul) {
      const li = element("li");
      const a = element("a", "active", title || strings.untitled);
      a.href = url;
      a.dir = "auto";
      li.appendChild(a);
      li.dataset.conversationId = id;
      ul.prepend(li);
      addMenu(li);
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
    button.dataset.action = "regenerate";
    button.addEventListener("click", () => send({ regenerate: true }));
    article.querySelector(".meta").append(" · ", button);
  }

  // -- sending ---------------------------------------------------------------------------
  // The answer's text as it arrives, from a fetch Response or from the XHR below.
  async function* textOf(response) {
    if (response.textChunks) {
      yield* response.textChunks;
      return;
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      yield value;
    }
  }

  // The articles from `article` to the end of the thread: the branch an edit replaces.
  function branchFrom(article) {
    const nodes = [];
    for (let node = article; node; node = node.nextElementSibling) nodes.push(node);
    return nodes;
  }

  // The thread as the server renders it (versions' "k / n", attachments with their ids),
  // fetched after an edit or a send with files; not while another reply is live in it.
  async function refreshThread() {
    if (controller || liveReply()) return;
    try {
      const response = await window.panel.get(window.location.pathname, { accept: "text/html" });
      if (!response.ok) return;
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = page.getElementById("messages");
      if (!fresh || controller || liveReply()) return;
      list.replaceChildren(...Array.from(fresh.childNodes).map((n) => document.importNode(n, true)));
      decorate();
    } catch (err) {
      // The thread as streamed stays; a reload shows the server's.
    }
  }

  async function send({ regenerate = false, resume = false, edit = null } = {}) {
    if (controller) return false;
    const fresh = !regenerate && !resume && !edit; // a new message from the composer
    const text = edit ? edit.text : resume ? "" : input.value;
    if ((fresh || edit) && !text.trim()) {
      if (edit) showAlert(strings.emptyEdit);
      else input.focus();
      return false;
    }
    const body = new FormData(form);
    if (fresh) window.chatAttachments?.addTo(body);
    if (regenerate) {
      body.set("regenerate", "1");
      body.set("message", "");
      const last = list.querySelector("article.msg:last-of-type");
      if (last && last.dataset.role === "assistant") last.remove();
    } else if (resume) {
      body.set("continue", "1");
      body.set("message", "");
    } else if (edit) {
      body.set("message", text);
      body.set("edit", edit.article.dataset.messageId);
      edit.drop.forEach((id) => body.append("drop_attachments", id));
    }
    document.querySelector("[data-empty-chat]")?.remove();
    let sentBubble = null;
    // An edit hides the branch from the edited message on until the server takes it.
    const replaced = edit ? branchFrom(edit.article) : [];
    if (fresh || edit) {
      sentBubble = userBubble(text);
      if (edit && edit.kept.length) {
        const files = element("ul", "attachments");
        files.append(...edit.kept);
        sentBubble.prepend(files);
      }
      list.insertBefore(sentBubble, edit ? edit.article : null);
    }
    replaced.forEach((node) => { node.hidden = true; });
    const reply = replyBubble();
    list.insertBefore(reply.article, edit ? edit.article : null);
    scrollDown();
    controller = new AbortController();
    setBusy(true);
    let finished = false;
    let received = "";
    let answered = false;
    let accepted = false;
    let status = "";
    clearAlert();
    function takeBack() {
      // Nothing was saved: the bubbles go, the text stays where it was typed.
      reply.article.remove();
      if (sentBubble) sentBubble.remove();
      replaced.forEach((node) => { node.hidden = false; });
    }
    let lastId = "0"; // the last event id received: where a reconnection goes on from
    const withFiles = body.has("files");
    try {
      const response = withFiles
        ? await window.panel.upload(form.action, {
            body, signal: controller.signal, onUpload: (f) => window.chatAttachments?.progress(f),
          })
        : await window.panel.post(form.action, { body, accept: "text/event-stream", signal: controller.signal });
      answered = true;
      if (fresh) window.chatAttachments?.uploaded(sentBubble, response.ok);
      if (!response.ok || !(response.headers.get("Content-Type") || "").startsWith("text/event-stream")) {
        takeBack();
        showAlert(await describeRefusal(response));
        finished = true;
        return false;
      }
      accepted = true;
      replaced.forEach((node) => node.remove());
      if (fresh) input.value = "";
      const parse = sseParser((name, data, id) => {
        if (id !== null) lastId = id;
        if (name === "meta") {
          // The server's title for a new conversation: the message's words, at most 80 characters.
          rememberConversation(data.conversation, text.split(/\s+/).filter(Boolean).join(" ").slice(0, 80));
          reply.article.dataset.messageId = data.message;
          if (sentBubble) sentBubble.dataset.messageId = data.user_message;
        } else if (name === "delta") {
          received += data.text;
          reply.text = received;
          reply.meta.textContent = "";
          renderSoon(reply);
        } else if (name === "done") {
          finished = true;
          status = data.status || "complete";
          reply.live = false; // a frame still to come must not paint over the server's HTML
          reply.body.classList.remove("plain");
          reply.article.className = `msg assistant ${status}`;
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
          // Ended: no longer `live`, so Stop and Esc go to the next reply, not this one.
          reply.article.className = "msg assistant error";
          reply.meta.textContent = "";
          const said = element("span", "status-error", data.message);
          said.dir = "auto"; // an English provider error keeps its full stop at its end in Persian
          reply.meta.appendChild(said);
          addRegenerate(reply.article);
        }
      });
      for await (const chunk of textOf(response)) parse(chunk);
      if (!finished && reply.article.dataset.messageId && window.bseparReplies) {
        // The connection dropped, not the reply: follow it again from the last id.
        finished = true;
        followAgain(reply, lastId);
      } else if (!finished) {
        reply.meta.textContent = strings.network;
      }
    } catch (err) {
      if (err.name === "AbortError") {
        reply.article.className = "msg assistant stopped";
        reply.meta.textContent = strings.stopped;
        addRegenerate(reply.article);
      } else if (!answered) {
        // The panel was never reached: nothing was saved, so the message goes back to the box.
        takeBack();
        showAlert(strings.unreachable);
      } else if (reply.article.dataset.messageId && window.bseparReplies) {
        // The connection dropped, not the reply: follow it again from the last id.
        followAgain(reply, lastId);
      } else {
        reply.meta.textContent = strings.network;
      }
    } finally {
      window.chatAttachments?.uploaded(null, false); // the progress bar goes, however it ended
      controller = null;
      setBusy(false);
      if (!edit || accepted) input.focus();
    }
    // The server's rendering shows an edit's new version ("k / n") and the ids of the files.
    if (status && (edit || withFiles)) await refreshThread();
    return accepted;
  }

  function followAgain(reply, lastId) {
    reply.live = false; // replies.js paints it from now on: no frame of ours paints over it
    const { article } = reply;
    // From the text received up to the last id (not the page's rendering of it); its end is
    // shown by the "reply:end" listener below, as for any followed reply.
    window.bseparReplies.follow(article, article.dataset.messageId, lastId, null, reply.text);
    syncStop();
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
          const data = await response.json();
          const card = button.closest(".tool-card");
          if (data.html && card) {
            // The card in its true state (undone, no Undo), rendered by the server's template.
            const holder = element("div");
            holder.innerHTML = data.html;
            card.replaceWith(holder.firstElementChild);
          } else button.replaceWith(element("span", "muted small", strings.undone));
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

  // Stop, by the button or Escape: one function, so both do whatever Stop does.
  function stopReply() {
    // The reply runs on the server: Stop asks it to stop; the stream then ends with `done`.
    const live = list.querySelector("article.live[data-message-id]");
    if (live && window.bseparReplies) window.bseparReplies.stop(live.dataset.messageId);
    else if (controller) controller.abort();
  }
  stopButton.addEventListener("click", stopReply);
  // replies.js says when a reply it follows starts or ends (the Stop button shows or goes).
  list.addEventListener("reply:follow", syncStop);
  // A followed reply ends as one this page sent: its usage, its code blocks' Copy, and
  // Regenerate when it is the last one.
  list.addEventListener("reply:end", (event) => {
    syncStop();
    const article = event.target;
    const meta = article.querySelector(".meta");
    const { name, data } = event.detail;
    if (name === "done" && meta) {
      meta.textContent = describeUsage(data);
      if (data.status === "stopped") meta.prepend(`${strings.stopped} · `);
    }
    addCopyButtons(article);
    if (article === list.querySelector("article.msg:last-of-type") && meta) addRegenerate(article);
  });

  // -- Edit: a user message becomes an editor; Enter sends, Shift+Enter breaks the line, Esc
  // cancels. Its files are chips that can be removed before sending (the server keeps the
  // others: `drop_attachments` names the removed ones).
  function openEditor(article) {
    if (controller || !article.dataset.messageId || article.querySelector(".msg-editor")) return;
    const body = article.querySelector(".body");
    const shown = Array.from(article.children);
    const editor = element("div", "msg-editor");
    const area = element("textarea");
    area.dir = "auto";
    area.rows = Math.min(12, Math.max(3, body.textContent.split("\n").length + 1));
    area.value = body.textContent;
    area.setAttribute("aria-label", strings.editLabel);
    const drop = new Set();
    const chips = element("ul", "attach-chips");
    chips.setAttribute("aria-label", strings.editFiles);
    article.querySelectorAll(".attachments [data-attachment-id]").forEach((file) => {
      const chip = file.cloneNode(true);
      const name = (chip.querySelector(".attach-name") || chip).textContent.trim();
      const remove = element("button", "icon-button attach-remove", "×");
      remove.type = "button";
      remove.dataset.action = "remove-attachment";
      remove.setAttribute("aria-label", strings.removeFile.replace("{name}", name));
      remove.addEventListener("click", () => {
        drop.add(file.dataset.attachmentId);
        chip.remove();
        area.focus();
      });
      chip.append(remove);
      chips.append(chip);
    });
    const row = element("div", "composer-row");
    const cancel = element("button", "", strings.cancel);
    cancel.type = "button";
    cancel.dataset.action = "edit-cancel";
    const submit = element("button", "primary", strings.send);
    submit.type = "button";
    submit.dataset.action = "edit-send";
    row.append(element("span", "grow"), cancel, submit);
    if (chips.children.length) editor.append(chips);
    editor.append(area, row);
    shown.forEach((node) => { node.hidden = true; });
    article.classList.add("editing");
    article.append(editor);

    function close() {
      editor.remove();
      article.classList.remove("editing");
      shown.forEach((node) => { node.hidden = false; });
      clearAlert();
    }
    async function go() {
      const kept = Array.from(article.querySelectorAll(".attachments [data-attachment-id]"))
        .filter((file) => !drop.has(file.dataset.attachmentId))
        .map((file) => file.cloneNode(true));
      submit.disabled = true;
      const sent = await send({ edit: { article, text: area.value, drop: Array.from(drop), kept } });
      submit.disabled = false;
      if (!sent && article.isConnected) area.focus(); // refused: the edited text stays
    }
    cancel.addEventListener("click", close);
    submit.addEventListener("click", go);
    area.addEventListener("keydown", (event) => {
      if (event.isComposing) return;
      if (event.key === "Enter" && !event.shiftKey) {
        event.preventDefault();
        go();
      } else if (event.key === "Escape" && !controller) {
        event.preventDefault(); // spent here: not a Stop
        close();
        article.querySelector("[data-action=edit]")?.focus();
      }
    });
    area.focus();
    area.setSelectionRange(area.value.length, area.value.length);
  }

  // -- the conversation list is one tab stop: arrows, Home and End move inside it ------------
  const conversationList = document.getElementById("conversation-list");
  function listLinks() {
    return conversationList ? Array.from(conversationList.querySelectorAll("li > a")) : [];
  }
  function rovingStop() {
    const links = listLinks();
    const current = links.find((a) => a.classList.contains("active")) || links[0];
    links.forEach((a) => { a.tabIndex = a === current ? 0 : -1; });
  }

  // -- each conversation's menu (pin, rename, delete): one menu for the whole list -------------
  // The page renders the menu's body once (<template id="item-menu">, its addresses built for
  // conversation 0). Each row gets an empty <details class="item-menu"> (its ⋯ is not a tab
  // stop: the list is one); opening one moves the body into it, filled from the row: its id
  // (data-conversation-id), its title (the link; none when data-untitled) and its pinned state
  // (class "pinned"). A hundred rows of their own forms were three quarters of the page's
  // server time.
  const menuTemplate = document.getElementById("item-menu");
  const menuStrings = menuTemplate ? menuTemplate.dataset : {};
  const menuBody = menuTemplate ? document.importNode(menuTemplate.content, true).firstElementChild : null;
  menuBody?.querySelectorAll("form").forEach((f) => { f.dataset.pattern = f.getAttribute("action"); });

  function addMenu(li) {
    if (!menuBody || !li.dataset.conversationId || li.querySelector(".item-menu")) return;
    const details = element("details", "item-menu");
    const summary = element("summary", "", "⋯");
    summary.tabIndex = -1;
    summary.title = menuStrings.optionsShort;
    summary.setAttribute("aria-label", menuStrings.options.replace("{title}", li.querySelector("a").textContent));
    details.appendChild(summary);
    li.appendChild(details);
  }

  function fillMenu(details) {
    conversationList.querySelectorAll(".item-menu[open]").forEach((other) => {
      if (other !== details) other.open = false;
    });
    if (menuBody.parentElement === details) return; // already here (and maybe being typed in)
    const li = details.closest("li");
    const id = li.dataset.conversationId;
    const pinned = li.classList.contains("pinned");
    menuBody.querySelectorAll("form").forEach((f) => {
      f.setAttribute("action", f.dataset.pattern.replace("/0/", `/${id}/`));
    });
    menuBody.querySelector("input[name=pinned]").value = pinned ? "0" : "1";
    menuBody.querySelector("input[name=next]").value = window.location.pathname + window.location.search;
    menuBody.querySelector("[data-action=pin]").textContent = pinned ? menuStrings.unpin : menuStrings.pin;
    menuBody.querySelector("input[name=title]").value =
      "untitled" in li.dataset ? "" : li.querySelector("a").textContent;
    details.appendChild(menuBody);
  }

  function closeMenu(details) {
    details.open = false;
    details.closest("li").querySelector("a").focus();
  }

  if (conversationList && menuBody) {
    conversationList.querySelectorAll("li").forEach(addMenu);
    // "toggle" does not bubble: it is caught on its way down.
    conversationList.addEventListener("toggle", (event) => {
      const details = event.target;
      if (details instanceof HTMLDetailsElement && details.matches(".item-menu") && details.open) {
        fillMenu(details);
      }
    }, true);
  }

  conversationList?.addEventListener("keydown", (event) => {
    const openMenu = event.target instanceof Element ? event.target.closest(".item-menu[open]") : null;
    if (openMenu && event.key === "Escape" && !event.isComposing) {
      event.preventDefault(); // this Escape is spent: not a Stop of the reply
      closeMenu(openMenu);
      return;
    }
    const links = listLinks();
    const at = links.indexOf(document.activeElement);
    if (at < 0) return;
    if (event.key === "ContextMenu" || (event.key === "F10" && event.shiftKey)) {
      // The conversation's menu (pin, rename, delete): not a tab stop of its own.
      const menu = links[at].parentElement.querySelector(".item-menu");
      if (!menu) return;
      event.preventDefault();
      fillMenu(menu);
      menu.open = true;
      menu.querySelector(".item-menu-body button")?.focus();
      return;
    }
    const next = { ArrowDown: at + 1, ArrowUp: at - 1, Home: 0, End: links.length - 1 }[event.key];
    if (next === undefined) return;
    event.preventDefault();
    const target = links[Math.max(0, Math.min(next, links.length - 1))];
    links.forEach((a) => { a.tabIndex = a === target ? 0 : -1; });
    target.focus();
  });
  rovingStop();
  // A conversation added by the first reply joins the list as its tab stop.
  if (conversationList) new MutationObserver(rovingStop).observe(conversationList, { childList: true });

  // -- keyboard shortcuts (listed in the ? help) ----------------------------------------------
  // Letters are matched by key position (event.code) so they work in a Persian layout too.
  // Plain keys act when no text field has the focus; Alt+Shift+key acts from anywhere.
  const help = document.getElementById("shortcuts");
  const shortcuts = {
    KeyN: () => { window.location.assign(document.querySelector("[data-new-chat]").href); },
    Slash: () => {
      // On a narrow screen the search is behind the conversations button: open it first.
      if (listButton?.offsetParent && listButton.getAttribute("aria-expanded") !== "true") listButton.click();
      document.querySelector(".chat-list input[type=search]")?.focus();
    },
    KeyC: () => {
      const replies = list.querySelectorAll("article[data-role=assistant] [data-action=copy]");
      replies[replies.length - 1]?.click();
    },
  };
  function typing(target) {
    return target instanceof HTMLElement &&
      (target.isContentEditable || target.matches("input, textarea, select"));
  }
  function openHelp() {
    if (!help.open) help.showModal();
  }
  document.querySelectorAll("[data-action=help]").forEach((b) => b.addEventListener("click", openHelp));
  document.addEventListener("keydown", (event) => {
    // Escape stops a reply being written, from anywhere (the message box included), unless it
    // closes something first: the help dialog, or the drawer (panel.js marks that Escape spent).
    if (event.key === "Escape" && (controller || liveReply()) && !event.isComposing && !event.defaultPrevented && !help.open) {
      event.preventDefault();
      stopReply();
      return;
    }
    if (event.ctrlKey || event.metaKey || event.isComposing || help.open) return;
    const anywhere = event.altKey && event.shiftKey;
    if (!anywhere && (event.altKey || typing(event.target))) return;
    if ((event.key === "?" || event.key === "؟") && !anywhere) {
      event.preventDefault();
      openHelp();
      return;
    }
    // "/" is Shift+7 on some layouts: the plain key is read from event.key, the chord from code.
    const action = anywhere ? shortcuts[event.code === "KeyF" ? "Slash" : event.code]
      : shortcuts[event.key === "/" ? "Slash" : event.code];
    if (!action || (!anywhere && event.shiftKey && event.key !== "/")) return;
    event.preventDefault();
    action();
  });

  // Messages as the server rendered them: copy buttons, a Copy (and an Edit) of each message,
  // and Regenerate on the last reply (on page open, and after refreshThread).
  function decorate() {
    addCopyButtons(list);
    const articles = list.querySelectorAll("article.msg");
    articles.forEach(addMessageTools);
    const last = articles[articles.length - 1];
    if (last && last.dataset.role === "assistant") addRegenerate(last);
    scrollDown();
  }
  decorate();
  syncStop();
  // The message box has the focus when the chat opens (not on touch screens, where it would
  // open the on-screen keyboard over the conversation).
  if (!input.disabled && !window.matchMedia("(pointer: coarse)").matches) input.focus();
})();
