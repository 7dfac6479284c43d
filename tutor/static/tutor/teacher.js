// Teachers' and administrators' tools on the launch page: the course's tutor settings, the
// placement's own instructions, the prompt's preview and "try it as a student". The prompt is
// always the server's (the function the chat uses): this page never builds one itself.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const tutorApi = window.tutorApi, api = tutorApi.api;
  const SETTINGS = "/api/v1/course/tutor-settings/";

  const form = $("settings-form");
  if (!form) return;
  const placementField = form.elements.placement_instructions || null;
  const placementUrl = placementField ? "/api/v1/course/placements/" + placementField.dataset.placementId + "/" : null;

  function lines(text) {
    return text.split("\n").map((line) => line.trim()).filter(Boolean);
  }

  // A validation error names its fields; say which, in the form's own words.
  async function problem(response) {
    let error;
    try { error = (await response.json()).error; } catch (e) { return "Something went wrong (" + response.status + ")."; }
    const fields = error.detail && error.detail.fields;
    if (!fields) return error.message;
    const described = [];
    (function walk(value, name) {
      if (Array.isArray(value) && value.every((item) => typeof item === "string")) {
        const field = form.elements[name];
        const label = field && field.id ? document.querySelector('label[for="' + field.id + '"]') : null;
        described.push((label ? label.textContent : name) + ": " + value.join(" "));
      } else if (value && typeof value === "object") {
        Object.keys(value).forEach((key) => walk(value[key], isNaN(key) ? key : name));
      }
    })(fields, "");
    return described.join(" ") || error.message;
  }

  function fill(values) {
    Object.keys(values).forEach(function (name) {
      const field = form.elements[name];
      if (!field) return;
      if (field.type === "checkbox") {
        field.checked = values[name];
      } else if (name === "example_questions") {
        field.value = values[name].join("\n");
      } else {
        // A language saved before the list existed stays shown (and saveable) until another is picked.
        if (field.tagName === "SELECT" && !Array.from(field.options).some((o) => o.value === values[name])) {
          field.add(new Option(values[name], values[name]));
        }
        field.value = values[name];
      }
    });
  }

  function settingsBody() {
    const body = {};
    ["persona", "instructions", "subject", "level", "reply_language", "avoid", "greeting"].forEach(function (name) {
      body[name] = form.elements[name].value;
    });
    body.socratic = form.elements.socratic.checked;
    body.example_questions = lines(form.elements.example_questions.value);
    return body;
  }

  function draftBody() {
    const body = {settings: settingsBody()};
    if (placementField) body.placement_instructions = placementField.value;
    return body;
  }

  api(SETTINGS).then((r) => r.json()).then(fill);
  if (placementUrl) {
    api(placementUrl).then((r) => r.json()).then(function (placement) { placementField.value = placement.instructions; });
  }

  const status = $("settings-status");
  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    status.textContent = "Saving…";
    const saved = await api(SETTINGS, {method: "PUT", body: settingsBody()});
    if (!saved.ok) { status.textContent = await problem(saved); return; }
    if (placementUrl) {
      const placed = await api(placementUrl, {method: "PUT", body: {instructions: placementField.value}});
      if (!placed.ok) { status.textContent = await problem(placed); return; }
    }
    status.textContent = "Saved.";
  });

  $("prompt-preview-button").addEventListener("click", async function () {
    status.textContent = "";
    const response = await api(SETTINGS + "preview/", {method: "POST", body: draftBody()});
    if (!response.ok) { status.textContent = await problem(response); return; }
    const preview = await response.json();
    $("prompt-text").textContent = preview.system_prompt;
    const size = $("prompt-size");
    if (preview.tokens === null) {
      size.textContent = "The model server cannot count its length right now.";
    } else {
      size.textContent = preview.tokens.toLocaleString() + " of the model's " + preview.context_tokens.toLocaleString() +
        " tokens; " + preview.reply_tokens.toLocaleString() + " are kept for each reply, the rest for the conversation." +
        (preview.fits ? "" : " Too long: shorten the instructions, or students' messages will not fit.");
    }
    $("prompt-preview").hidden = false;
  });

  const tryForm = $("try-form"), tryInput = $("try-input"), tryStatus = $("try-status"), tryReply = $("try-reply");
  tryForm.addEventListener("submit", async function (event) {
    event.preventDefault();
    if (!tryInput.value.trim()) { tryStatus.textContent = "Write a message first."; return; }
    $("try-send").disabled = true;
    tryStatus.textContent = "The tutor is answering… (nothing is recorded)";
    try {
      const response = await api(SETTINGS + "try/", {method: "POST", body: Object.assign(draftBody(), {content: tryInput.value})});
      if (!response.ok) { tryStatus.textContent = await problem(response); return; }
      const tried = await response.json();
      if (tried.fits) tutorApi.renderMarkdown(tryReply, tried.reply); else tryReply.textContent = tried.reply;
      tryReply.hidden = false;
      tryStatus.textContent = !tried.fits
        ? "A student would be refused this: the instructions leave the model no room for their message. Shorten them."
        : tried.screened
        ? "A safety rule answered, as a student would see it (its words say a teacher was told). " +
          "No flag was raised and nobody was alerted: nothing of a try is kept."
        : "Not recorded.";
    } finally {
      $("try-send").disabled = false;
    }
  });
})();
