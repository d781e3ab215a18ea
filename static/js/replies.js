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

  // The thread follows a growing reply down, unless the reader has scrolled up from its end.
  function atEnd() {
    return !list || list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  }
  function toEnd() {
    if (list) list.scrollTop = list.scrollHeight;
  }

  // EventSource reconnects by itself after a dropped connection, but gives up for good when a
  // reconnection is answered with an error status (nginx's 502 while the server is down or
  // restarting): the reply is then followed again, from the last id received, after these
  // pauses (ms; the last one repeats).
  const AGAIN_MS = [1000, 2000, 5000, 10000, 30000];

  // Show reply `id` in `article` from code point `after` on (the last event id received;
  // never computed here), `held` being the reply's text up to it as received (never read back
  // from the page: its rendering is not the text). Without `held`, from the start.
  // `onEnd(name, data)` is called once with the last event.
  function follow(article, id, after, onEnd, held) {
    const body = article.querySelector(".body");
    const meta = article.querySelector(".meta");
    let from = typeof held === "string" ? Number(after) || 0 : 0;
    let text = from ? held : "";
    article.classList.add("live", "streaming");
    if (meta) meta.textContent = ""; // the page's "Generating…" for a reply it saw streaming
    // Painted as Markdown (js/markdown.js, as chat.js paints its own stream), once per
    // animation frame: deltas often come faster than frames.
    let frame = 0;
    let over = false;
    const paint = () => {
      frame = 0;
      if (over) return;
      const stick = atEnd();
      const html = window.panelMarkdown ? window.panelMarkdown.render(text) : null;
      if (html === null) {
        body.classList.add("plain");
        body.textContent = text; // plain text: nothing in it can run
      } else {
        body.removeAttribute("dir"); // every block carries its own direction
        body.innerHTML = html; // sanitized by DOMPurify with the server's allow-lists
      }
      if (stick) toEnd();
    };
    const ended = (name, data) => {
      over = true;
      if (frame) window.cancelAnimationFrame(frame);
      article.dispatchEvent(new CustomEvent("reply:end", { bubbles: true, detail: { name, data } }));
      if (onEnd) onEnd(name, data);
    };
    let failures = 0;
    const open = () => {
      const source = new EventSource(`${address("reattachUrl", id)}?after=${from}`);
      source.addEventListener("open", () => {
        failures = 0;
      });
      source.addEventListener("delta", (event) => {
        text += JSON.parse(event.data).text;
        from = event.lastEventId; // the server's count: where a new follow goes on from
        if (!frame) frame = window.requestAnimationFrame(paint);
      });
      source.addEventListener("done", (event) => {
        source.close();
        const data = JSON.parse(event.data);
        const stick = atEnd();
        over = true;
        body.classList.remove("plain");
        body.innerHTML = data.html; // sanitized on the server (markdown-it + nh3)
        article.className = `msg assistant ${data.status}`;
        if (meta) meta.textContent = data.status === "stopped" ? strings.stopped || "" : "";
        if (stick) toEnd();
        ended("done", data);
      });
      // The server's `error` event carries data; a dropped connection does not.
      source.addEventListener("error", (event) => {
        if (!event.data) {
          if (source.readyState === EventSource.CLOSED && !over) {
            const pause = AGAIN_MS[Math.min(failures, AGAIN_MS.length - 1)];
            failures += 1;
            window.setTimeout(() => { if (!over) open(); }, pause);
          }
          return; // otherwise EventSource reconnects by itself
        }
        source.close();
        const data = JSON.parse(event.data);
        if (frame) paint(); // what arrived stays in sight, whole
        article.className = "msg assistant error";
        if (meta) {
          const said = document.createElement("span");
          said.className = "status-error";
          said.dir = "auto"; // an English error keeps its full stop at its end in Persian
          said.textContent = data.message;
          meta.replaceChildren(said);
        }
        ended("error", data);
      });
    };
    open();
    article.dispatchEvent(new CustomEvent("reply:follow", { bubbles: true }));
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
