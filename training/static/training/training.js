// The training page updates in place: its live part is fetched again and swapped in, so a
// reload never collapses an open log or loses the reader's place. What a person opened or
// focused (elements with ids) is carried over; notices about an earlier state are dropped.
(function () {
  "use strict";
  const region = document.getElementById("training-live");
  if (!region || !window.fetch || !window.DOMParser) return;  // the page still works, reloaded by hand
  const url = region.dataset.liveUrl;

  function live() { return region.querySelector("[data-testid=live]"); }

  function swap(html) {
    const next = new DOMParser().parseFromString(html, "text/html").querySelector("[data-testid=live]");
    const current = live();
    if (!next || !current) return;
    region.querySelectorAll("details[id]").forEach(function (old) {
      const same = next.querySelector("details#" + CSS.escape(old.id));
      if (same) same.open = old.open;
    });
    const focused = document.activeElement && region.contains(document.activeElement) ? document.activeElement.id : "";
    current.replaceWith(document.importNode(next, true));
    if (focused) {
      const again = document.getElementById(focused);
      if (again) again.focus({preventScroll: true});
    }
    const state = next.dataset.stateKey;
    document.querySelectorAll("#notices [data-state-key]").forEach(function (notice) {
      if (notice.dataset.stateKey !== state) notice.remove();
    });
  }

  async function update() {
    let delay = Number(live() && live().dataset.pollMs) || 5000;
    try {
      const response = await fetch(url, {headers: {"Accept": "text/html"}, credentials: "same-origin", cache: "no-store"});
      if (response.ok) {
        swap(await response.text());
        delay = Number(live().dataset.pollMs) || delay;
      } else if (response.status === 401 || response.status === 403) {
        return;  // the review session ended: the next reload shows why
      }
    } catch (e) { /* offline for a moment: try again later */ }
    setTimeout(update, document.hidden ? Math.max(delay, 15000) : delay);
  }

  setTimeout(update, Number(live() && live().dataset.pollMs) || 5000);
})();
