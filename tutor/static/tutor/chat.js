// The student's chat page. Every API call carries the launch token (no third-party cookie needed).
(function () {
  "use strict";
  const token = document.querySelector('meta[name="launch-token"]').content;
  const $ = (id) => document.getElementById(id);
  const list = $("conversation-list"), messages = $("messages"), statusLine = $("chat-status");
  const input = $("message-input"), form = $("composer"), sendButton = $("send");
  let current = null, busy = false;

  function api(path, options) {
    options = options || {};
    const headers = Object.assign({"Authorization": "Bearer " + token, "Accept": "application/json"}, options.headers || {});
    if (options.body && typeof options.body !== "string") {
      headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(options.body);
    }
    return fetch(path, Object.assign({}, options, {headers: headers}));
  }

  async function errorMessage(response) {
    try { return (await response.json()).error.message; } catch (e) { return "Something went wrong (" + response.status + ")."; }
  }

  function renderMarkdown(element, text) {
    if (window.marked && window.DOMPurify) {
      element.innerHTML = DOMPurify.sanitize(marked.parse(text, {breaks: true}));
      if (window.renderMathInElement) {
        renderMathInElement(element, {delimiters: [
          {left: "$$", right: "$$", display: true}, {left: "\\[", right: "\\]", display: true},
          {left: "$", right: "$", display: false}, {left: "\\(", right: "\\)", display: false}],
          throwOnError: false});
      }
    } else {
      element.textContent = text;
    }
  }

  function addMessage(message) {
    const item = document.createElement("li");
    item.className = "message " + (message.role === "user" ? "from-student" : "from-tutor");
    item.dataset.id = message.id || "";
    const body = document.createElement("div");
    body.className = "body";
    item.appendChild(body);
    if (message.role === "user") { body.textContent = message.content; } else { renderMarkdown(body, message.content || ""); }
    if (message.status === "interrupted") { item.appendChild(note("This reply was cut short.")); }
    if (message.role === "assistant" && message.id && message.status !== "failed") { item.appendChild(ratingControls(message)); }
    messages.appendChild(item);
    item.scrollIntoView({block: "end"});
    return item;
  }

  function note(text) { const p = document.createElement("p"); p.className = "note muted"; p.textContent = text; return p; }

  function ratingControls(message) {
    const group = document.createElement("div");
    group.className = "rating";
    group.setAttribute("role", "group");
    group.setAttribute("aria-label", "Was this reply helpful?");
    [[1, "👍", "Helpful"], [-1, "👎", "Not helpful"]].forEach(function (choice) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = choice[1];
      button.setAttribute("aria-label", choice[2]);
      button.setAttribute("aria-pressed", String(message.rating === choice[0]));
      button.addEventListener("click", async function () {
        const value = button.getAttribute("aria-pressed") === "true" ? 0 : choice[0];
        const response = await api("/api/v1/messages/" + message.id + "/rating/", {method: "POST", body: {value: value}});
        if (response.ok) {
          group.querySelectorAll("button").forEach((b) => b.setAttribute("aria-pressed", "false"));
          button.setAttribute("aria-pressed", String(value !== 0));
        }
      });
      group.appendChild(button);
    });
    return group;
  }

  async function loadConversations() {
    const response = await api("/api/v1/conversations/");
    if (!response.ok) { statusLine.textContent = await errorMessage(response); return []; }
    const conversations = await response.json();
    list.innerHTML = "";
    conversations.forEach(function (conversation) {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = conversation.title || "New conversation";
      button.setAttribute("aria-current", String(current === conversation.id));
      button.addEventListener("click", () => openConversation(conversation.id));
      item.appendChild(button);
      list.appendChild(item);
    });
    return conversations;
  }

  async function openConversation(id) {
    current = id;
    const response = await api("/api/v1/conversations/" + id + "/");
    messages.innerHTML = "";
    if (!response.ok) { statusLine.textContent = await errorMessage(response); return; }
    (await response.json()).messages.filter((m) => m.status !== "failed").forEach(addMessage);
    statusLine.textContent = "";
    loadConversations();
    input.focus();
  }

  async function newConversation() {
    const response = await api("/api/v1/conversations/", {method: "POST"});
    if (!response.ok) { statusLine.textContent = await errorMessage(response); return; }
    await openConversation((await response.json()).id);
  }

  // Reads Server-Sent Events from a POST response (EventSource cannot POST).
  async function readEvents(response, onEvent) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const chunk = await reader.read();
      if (chunk.done) break;
      buffer += decoder.decode(chunk.value, {stream: true});
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const name = (block.match(/^event: (.*)$/m) || [])[1];
        const data = (block.match(/^data: (.*)$/m) || [])[1];
        if (name) onEvent(name, data ? JSON.parse(data) : {});
      }
    }
  }

  async function stream(path, body) {
    busy = true; sendButton.disabled = true;
    statusLine.textContent = "The tutor is writing…";
    const reply = addMessage({role: "assistant", content: ""});
    const target = reply.querySelector(".body");
    let text = "", pending = false;
    try {
      const response = await api(path, {method: "POST", body: body});
      if (!response.ok) { reply.remove(); showError(await errorMessage(response), response.status === 503); return; }
      await readEvents(response, function (name, data) {
        if (name === "token") {
          text += data.text;
          if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; renderMarkdown(target, text); }); }
        } else if (name === "replaced") {
          text = data.text; renderMarkdown(target, text);
        } else if (name === "done") {
          reply.dataset.id = data.reply.id;
          renderMarkdown(target, data.reply.content);
          reply.appendChild(ratingControls(data.reply));
          statusLine.textContent = "";
        } else if (name === "error") {
          if (!text) reply.remove();
          showError(data.message, true);
        }
      });
    } catch (error) {
      showError("The connection to the tutor was lost. Your message is saved.", true);
    } finally {
      busy = false; sendButton.disabled = false; loadConversations();
    }
  }

  function showError(message, canRetry) {
    statusLine.textContent = message + " ";
    if (canRetry) {
      const retry = document.createElement("button");
      retry.type = "button";
      retry.textContent = "Retry";
      retry.addEventListener("click", () => stream("/api/v1/conversations/" + current + "/reply/stream/"));
      statusLine.appendChild(retry);
      retry.focus();
    }
  }

  async function send(event) {
    event.preventDefault();
    const content = input.value.trim();
    if (!content || busy) return;
    if (current === null) await newConversation();
    addMessage({role: "user", content: content});
    input.value = "";
    await stream("/api/v1/conversations/" + current + "/messages/stream/", {content: content});
  }

  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); form.requestSubmit(); }
  });
  form.addEventListener("submit", send);
  $("new-conversation").addEventListener("click", newConversation);

  const settingsForm = $("settings-form");
  if (settingsForm) {
    api("/api/v1/course/tutor-settings/").then((r) => r.json()).then(function (values) {
      Object.keys(values).forEach(function (name) {
        const field = settingsForm.elements[name];
        if (!field) return;
        if (field.type === "checkbox") field.checked = values[name]; else field.value = values[name];
      });
    });
    settingsForm.addEventListener("submit", async function (event) {
      event.preventDefault();
      const body = {};
      Array.from(settingsForm.elements).forEach(function (field) {
        if (field.name) body[field.name] = field.type === "checkbox" ? field.checked : field.value;
      });
      const response = await api("/api/v1/course/tutor-settings/", {method: "PUT", body: body});
      $("settings-status").textContent = response.ok ? "Saved." : await errorMessage(response);
    });
  }

  // The student's own choice about training (shown only when the course allows training).
  const trainingChoice = $("training-choice");
  if (trainingChoice) {
    api("/api/v1/me/").then((r) => r.json()).then(function (me) {
      if (!me.training.course_allows) return;
      trainingChoice.hidden = false;
      const box = $("training-opt-in");
      box.checked = !me.training.opted_out;
      box.addEventListener("change", async function () {
        const response = await api("/api/v1/me/training/", {method: "PUT", body: {opted_out: !box.checked}});
        $("training-status").textContent = response.ok
          ? (box.checked ? "Thank you: approved replies may improve the tutor." : "Your conversations will not be used.")
          : await errorMessage(response);
      });
    });
  }

  loadConversations().then(function (conversations) { if (conversations.length) openConversation(conversations[0].id); });
})();
