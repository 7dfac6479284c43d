// One renderer for every page that shows a tutor reply (chat, try-it, review): Markdown with the
// vendored marked, sanitised by DOMPurify, maths by KaTeX's auto-render; plain text without them.
// window.tutorRender.markdown(element, text); window.tutorRender.maths(element) renders the maths
// in a plain-text element (a student's message, a title) and leaves the rest as typed.
(function () {
  "use strict";

  // The scrubber's placeholders (<PERSON>, <EMAIL_ADDRESS>…) would read as HTML tags and vanish.
  const PLACEHOLDER = /<([A-Z_]+)>/g;
  const MATH = {delimiters: [
    {left: "$$", right: "$$", display: true}, {left: "\\[", right: "\\]", display: true},
    {left: "$", right: "$", display: false}, {left: "\\(", right: "\\)", display: false}],
    throwOnError: false};

  function markdown(element, text) {
    if (!(window.marked && window.DOMPurify)) { element.textContent = text; return; }
    element.innerHTML = DOMPurify.sanitize(marked.parse(text.replace(PLACEHOLDER, "&lt;$1&gt;"), {breaks: true}));
    if (window.renderMathInElement) { renderMathInElement(element, MATH); }
  }

  function maths(element) {
    if (window.renderMathInElement) { renderMathInElement(element, MATH); }
  }

  window.tutorRender = {markdown: markdown, maths: maths};
})();
