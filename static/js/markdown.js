// Markdown in the browser, for a reply while it streams: markdown-it (vendored, pinned) with the
// server's rules (core/markdown.py): commonmark + tables + strikethrough, raw HTML shown as text,
// dir="auto" on every block, tables left to right, a column's alignment as an `align` attribute
// (the CSP allows no inline styles), `$…$` / `$$…$$` math as MathML through KaTeX
// (`output: "mathml"`: no styles). DOMPurify then keeps only the tags and attributes the server's
// sanitizer allows (the page hands over the same lists), so nothing in a reply can run. At
// `done` the server's sanitized HTML replaces this rendering.
//
// window.panelMarkdown.render(text) returns the HTML, or null when the libraries are missing
// (the reply is then shown as plain text). KaTeX (the largest file) is loaded only once a reply
// holds math; onMath(callback) is told when it has arrived, to render again.
"use strict";

(function () {
  const policy = document.getElementById("md-policy");
  if (!policy || !window.markdownit || !window.DOMPurify) return;
  const tags = policy.dataset.tags.split(" ");
  const attributes = policy.dataset.attributes.split(" ");
  const listeners = [];
  let katexState = window.katex ? "ready" : null; // null → "loading" → "ready" | "failed"

  function loadKatex() {
    if (katexState) return;
    katexState = "loading";
    const script = document.createElement("script");
    script.src = policy.dataset.katex; // same origin: the CSP's 'self' allows it
    script.onload = () => {
      katexState = window.katex ? "ready" : "failed";
      listeners.forEach((callback) => callback());
    };
    script.onerror = () => { katexState = "failed"; };
    document.head.appendChild(script);
  }

  function escape(text) {
    return text.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
  }

  // LaTeX KaTeX cannot read (or math before KaTeX has arrived) shows as code, as on the server.
  // KaTeX's own error output carries an inline style, so errors are caught here instead.
  function math(tex, displayMode) {
    if (katexState !== "ready") {
      loadKatex();
      return `<code class="math-pending">${escape(tex)}</code>`;
    }
    try {
      return window.katex.renderToString(tex, {
        output: "mathml", displayMode, throwOnError: true, trust: false, strict: "ignore",
      });
    } catch (err) {
      return `<code class="math-error">${escape(tex)}</code>`;
    }
  }

  function isSpace(c) {
    return c === " " || c === "\t" || c === "\n" || c === "\r";
  }

  function escaped(src, pos) {
    let backslashes = 0;
    while (pos - 1 - backslashes >= 0 && src[pos - 1 - backslashes] === "\\") backslashes += 1;
    return backslashes % 2 === 1;
  }

  // `$…$` as mdit-py-plugins' dollarmath with allow_space / allow_digits off: `$5 and $10`
  // stays money.
  function mathInline(state, silent) {
    const src = state.src;
    const start = state.pos;
    if (src[start] !== "$" || src[start + 1] === "$" || start + 1 >= src.length) return false;
    if (isSpace(src[start + 1]) || /[0-9]/.test(src[start - 1] || "") || escaped(src, start)) return false;
    let end = start;
    do {
      end = src.indexOf("$", end + 1);
      if (end < 0) return false;
    } while (escaped(src, end));
    if (isSpace(src[end - 1]) || /[0-9]/.test(src[end + 1] || "") || end === start + 1) return false;
    if (!silent) {
      const token = state.push("math_inline", "math", 0);
      token.content = src.slice(start + 1, end);
    }
    state.pos = end + 1;
    return true;
  }

  // `$$` opening a line, up to a line that ends with `$$` (or the end of the reply so far).
  function mathBlock(state, startLine, endLine, silent) {
    if (state.sCount[startLine] - state.blkIndent >= 4) return false;
    const first = state.src.slice(state.bMarks[startLine] + state.tShift[startLine], state.eMarks[startLine]);
    if (!first.startsWith("$$")) return false;
    if (silent) return true;
    let line = startLine;
    let content;
    const rest = first.slice(2).trim();
    if (rest.length > 1 && rest.endsWith("$$")) {
      content = rest.slice(0, -2);
    } else {
      const lines = [first.slice(2)];
      for (line = startLine + 1; line < endLine; line++) {
        const text = state.src.slice(state.bMarks[line] + state.tShift[line], state.eMarks[line]);
        if (text.trim().endsWith("$$")) {
          lines.push(text.trim().slice(0, -2));
          break;
        }
        lines.push(text);
      }
      content = lines.join("\n");
    }
    state.line = Math.min(line + 1, endLine);
    const token = state.push("math_block", "math", 0);
    token.block = true;
    token.content = content;
    token.map = [startLine, state.line];
    return true;
  }

  const AUTO = new Set([
    "paragraph_open", "heading_open", "bullet_list_open", "ordered_list_open", "list_item_open",
    "blockquote_open", "th_open", "td_open",
  ]);

  function blocks(state) {
    for (const token of state.tokens) {
      if (AUTO.has(token.type)) token.attrSet("dir", "auto");
      if (token.type === "table_open") token.attrSet("dir", "ltr");
      if (token.type === "th_open" || token.type === "td_open") {
        const align = /^text-align:\s*(left|center|right)$/.exec(token.attrGet("style") || "");
        token.attrs = (token.attrs || []).filter(([name]) => name !== "style");
        if (align) token.attrSet("align", align[1]);
      }
    }
  }

  const md = window.markdownit("commonmark", { html: false, linkify: false, typographer: false });
  md.enable(["table", "strikethrough"]);
  md.inline.ruler.after("escape", "math_inline", mathInline);
  md.block.ruler.before("fence", "math_block", mathBlock, { alt: ["paragraph", "reference", "blockquote", "list"] });
  md.renderer.rules.math_inline = (tokens, i) => `<span class="math inline">${math(tokens[i].content.trim(), false)}</span>`;
  md.renderer.rules.math_block = (tokens, i) => `<div class="math block">\n${math(tokens[i].content.trim(), true)}\n</div>\n`;
  md.core.ruler.push("blocks", blocks);

  // Links as the server writes them; anything but http(s), mailto or a relative address is
  // dropped, as nh3 does.
  const purify = window.DOMPurify;
  purify.addHook("afterSanitizeAttributes", (node) => {
    if (node.tagName === "A" && node.hasAttribute("href")) node.setAttribute("rel", "noopener noreferrer nofollow");
  });
  const config = {
    ALLOWED_TAGS: tags,
    ALLOWED_ATTR: attributes.concat(["rel"]),
    FORBID_ATTR: ["style"],
    ALLOWED_URI_REGEXP: /^(?:(?:https?|mailto):|[^a-z]|[a-z+.-]+(?:[^a-z+.\-:]|$))/i,
  };

  window.panelMarkdown = {
    render(text) {
      return purify.sanitize(md.render(text), config);
    },
    onMath(callback) {
      listeners.push(callback);
    },
  };
})();
