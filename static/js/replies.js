// Replies outlive the page (issue #11): a reply is generated on the server whether or not a
// page is attached. This module follows a reply with an EventSource on
// GET /ai-chat/stream/<id>/ (which reconnects by itself after a dropped connection, sending
// the last event id it got, so the reply continues where it left off) and stops one with
// POST /ai-chat/messages/<id>/stop/. On page open, replies still generating are followed.
// chat.js calls window.bseparReplies.follow() when its own stream drops, and .stop() for Stop.
// The article followed gets the events "reply:follow" and, once the reply ends, "reply:end"
// (they bubble): chat.js shows its Stop button (and lets Esc stop) while one is followed.
"use strict";

(function () {
  const list = document.getElementById("messages");
  const strings = (document.getElementById("i18n-chat") || { dataset: {} }).dataset;

  // Addresses come from the page (built with {% url %} for message id 0: "/…/0/…").
  const composer = document.getElementById("composer");
  function address(name, id) {
    return composer.dataset[name].replace("/0/", `/${encodeURIComponent(id)}/`);
  }

  // Show reply `id` in `article` from code point `after` on (the last event id received;
  // never computed here). `onEnd(name, data)` is called once with the last event.
  function follow(article, id, after, onEnd) {
    const body = article.querySelector(".body");
    const meta = article.querySelector(".meta");
    let text = after ? body.textContent : "";
    const source = new EventSource(`${address("reattachUrl", id)}?after=${after || 0}`);
    article.classList.add("live", "streaming");
    const ended = (name, data) => {
      article.dispatchEvent(new CustomEvent("reply:end", { bubbles: true, detail: { name, data } }));
      if (onEnd) onEnd(name, data);
    };
    source.addEventListener("delta", (event) => {
      text += JSON.parse(event.data).text;
      body.textContent = text; // plain text while it grows: nothing in it can run
      if (meta) meta.textContent = "";
    });
    source.addEventListener("done", (event) => {
      source.close();
      const data = JSON.parse(event.data);
      body.innerHTML = data.html; // sanitized on the server (markdown-it + nh3)
      article.className = `msg assistant ${data.status}`;
      if (meta) meta.textContent = data.status === "stopped" ? strings.stopped || "" : "";
      ended("done", data);
    });
    // The server's `error` event carries data; a dropped connection does not (EventSource
    // then reconnects by itself).
    source.addEventListener("error", (event) => {
      if (!event.data) return;
      source.close();
      const data = JSON.parse(event.data);
      article.className = "msg assistant error";
      if (meta) meta.textContent = data.message;
      ended("error", data);
    });
    article.dispatchEvent(new CustomEvent("reply:follow", { bubbles: true }));
    return source;
  }

  async function stop(id) {
    const response = await window.panel.post(address("stopUrl", id));
    return response.ok;
  }

  // A reply still generating when the page opens (reload, second tab, back from the
  // dashboard) is shown live.
  if (list) {
    list.querySelectorAll('article[data-role="assistant"].streaming').forEach((article) => {
      follow(article, article.dataset.messageId, 0);
    });
  }

  window.bseparReplies = { follow, stop };
})();
