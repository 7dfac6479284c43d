// The review pages: tutor replies rendered as the chat renders them (Markdown, LaTeX), the
// correction's live preview, keyboard shortcuts, and the course page's "tick all". Without
// JavaScript the pages work as plain forms and show the text as it is.
(function () {
  "use strict";

  const renderMarkdown = window.tutorRender.markdown;  // render.js: the chat's renderer

  function renderReplies() {
    document.querySelectorAll(".msg .md").forEach((element) => {
      renderMarkdown(element, element.textContent);
      element.classList.remove("plain");
    });
    // Students' messages and titles: their maths rendered, their text left as they typed it.
    document.querySelectorAll(".maths").forEach(window.tutorRender.maths);
  }

  function livePreviews() {
    document.querySelectorAll("textarea[data-preview]").forEach((textarea) => {
      const preview = document.getElementById(textarea.dataset.preview);
      let pending = false;
      const update = () => { pending = false; renderMarkdown(preview, textarea.value); };
      textarea.addEventListener("input", () => {
        if (!pending) { pending = true; requestAnimationFrame(update); }
      });
      if (textarea.value) { update(); }
    });
  }

  // Shortcuts: j / k the next / previous reply, a approve it, r reject it, n the next
  // unreviewed conversation. Never while typing, never with a modifier key.
  function shortcuts() {
    const replies = Array.from(document.querySelectorAll(".msg[data-reply]"));
    if (!replies.length && !document.getElementById("next-unreviewed")) { return; }
    let current = replies.findIndex((reply) => "#" + reply.id === location.hash);

    function select(index) {
      if (!replies.length) { return; }
      current = Math.max(0, Math.min(replies.length - 1, index));
      replies.forEach((reply, i) => reply.classList.toggle("current", i === current));
      replies[current].focus();
      replies[current].scrollIntoView({block: "nearest"});
    }

    function decide(action) {
      if (current < 0) { select(0); }
      const form = replies[current] && replies[current].querySelector("form");
      const button = form && form.querySelector(`button[value="${action}"]`);
      if (button) { form.requestSubmit(button); }
    }

    if (current >= 0) { select(current); }
    document.addEventListener("keydown", (event) => {
      if (event.ctrlKey || event.metaKey || event.altKey || event.defaultPrevented) { return; }
      if (event.target.closest("input, textarea, select, [contenteditable]")) { return; }
      const next = document.getElementById("next-unreviewed");
      const keys = {
        j: () => select(current + 1),
        k: () => select(current < 0 ? 0 : current - 1),
        a: () => decide("approve"),
        r: () => decide("reject"),
        n: () => { if (next) { next.click(); } },
      };
      const run = keys[event.key];
      if (run) { event.preventDefault(); run(); }
    });
  }

  function tickAll() {
    const all = document.getElementById("tick-all");
    if (!all) { return; }
    all.closest("label").hidden = false;  // useless without JavaScript: shown by it
    all.addEventListener("change", () => {
      document.querySelectorAll('input[name="conversation"]').forEach((box) => { box.checked = all.checked; });
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    renderReplies();
    livePreviews();
    shortcuts();
    tickAll();
  });
})();
