// The chat on the launch page (every role). API calls go through api.js.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const list = $("conversation-list"), messages = $("messages"), statusLine = $("chat-status");
  const input = $("message-input"), form = $("composer"), sendButton = $("send"), counter = $("message-count");
  const emptyState = $("empty-state"), titleHeading = $("conversation-title"), actions = $("conversation-actions");
  const renameForm = $("rename-form"), renameInput = $("rename-input"), deleteConfirm = $("delete-confirm");
  const panel = $("conversations-panel");
  const limit = Number(input.dataset.limit);
  const narrow = window.matchMedia("(max-width: 48rem)");
  let current = null, currentTitle = "", busy = false;

  const api = window.tutorApi.api, errorMessage = window.tutorApi.errorMessage;

  // Inline SVG (Feather icons, MIT): Debian's Chromium has no emoji font, so 👍/👎 would be empty boxes.
  const SVG_NS = "http://www.w3.org/2000/svg";
  const THUMBS = {
    up: "M14 9V5a3 3 0 0 0-3-3l-4 9v11h11.28a2 2 0 0 0 2-1.7l1.38-9a2 2 0 0 0-2-2.3zM7 22H4a2 2 0 0 1-2-2v-7a2 2 0 0 1 2-2h3",
    down: "M10 15v4a3 3 0 0 0 3 3l4-9V2H5.72a2 2 0 0 0-2 1.7l-1.38 9a2 2 0 0 0 2 2.3zm7-13h2.67A2.31 2.31 0 0 1 22 4v7a2.31 2.31 0 0 1-2.33 2H17",
  };

  function icon(name) {
    const svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("width", "20");
    svg.setAttribute("height", "20");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    const path = document.createElementNS(SVG_NS, "path");
    path.setAttribute("d", THUMBS[name]);
    svg.appendChild(path);
    return svg;
  }

  const renderMarkdown = window.tutorApi.renderMarkdown;  // api.js: marked, DOMPurify, KaTeX

  function note(text) { const p = document.createElement("p"); p.className = "note"; p.textContent = text; return p; }

  function showEmptyState() { emptyState.hidden = current !== null || messages.children.length > 0; }

  function addMessage(message) {
    const item = document.createElement("li");
    item.className = "message " + (message.role === "user" ? "from-student" : "from-tutor");
    item.dataset.id = message.id || "";
    const body = document.createElement("div");
    body.className = "body";
    item.appendChild(body);
    if (message.role === "user") { body.textContent = message.content; } else { renderMarkdown(body, message.content || ""); }
    if (message.role === "assistant" && message.id && message.status === "complete") { item.appendChild(ratingControls(message)); }
    messages.appendChild(item);
    showEmptyState();
    messages.scrollTop = messages.scrollHeight;  // the list scrolls, not the page: the message box stays put
    return item;
  }

  // A reply that did not arrive (failed) or stopped (interrupted): said in words, with Retry when it
  // answers the conversation's last question (a retry always answers that one).
  function markUnfinished(item, status, reason, canRetry) {
    item.classList.add("unfinished");
    item.dataset.status = status;
    const text = status === "interrupted" ? "This reply was cut short." : (reason || "The tutor could not answer this message.");
    const line = note(text + (canRetry ? " " : ""));
    if (canRetry) {
      const retry = document.createElement("button");
      retry.type = "button";
      retry.className = "retry";
      retry.textContent = "Retry";
      retry.addEventListener("click", function () {
        if (busy) return;
        item.remove();
        stream("/api/v1/conversations/" + current + "/reply/stream/", null, null);
      });
      line.appendChild(retry);
    }
    item.appendChild(line);
    return line.querySelector("button");
  }

  function ratingControls(message) {
    const group = document.createElement("div");
    group.className = "rating";
    group.setAttribute("role", "group");
    group.setAttribute("aria-label", "Was this reply helpful?");
    [[1, "up", "Helpful"], [-1, "down", "Not helpful"]].forEach(function (choice) {
      const button = document.createElement("button");
      button.type = "button";
      button.appendChild(icon(choice[1]));
      button.setAttribute("aria-label", choice[2]);
      button.title = choice[2];
      button.setAttribute("aria-pressed", String(message.rating === choice[0]));
      button.addEventListener("click", async function () {
        const value = button.getAttribute("aria-pressed") === "true" ? 0 : choice[0];
        const response = await api("/api/v1/messages/" + message.id + "/rating/", {method: "POST", body: {value: value}});
        if (!response.ok) { statusLine.textContent = await errorMessage(response); return; }
        group.querySelectorAll("button").forEach((b) => b.setAttribute("aria-pressed", "false"));
        button.setAttribute("aria-pressed", String(value !== 0));
      });
      group.appendChild(button);
    });
    return group;
  }

  // keepForms: a title refreshed after a reply must not close a rename or delete the student opened meanwhile.
  function setTitle(title, keepForms) {
    currentTitle = title;
    titleHeading.textContent = current === null ? "New conversation" : (title || "Untitled conversation");
    actions.hidden = current === null;
    if (keepForms) return;
    renameForm.hidden = true;
    deleteConfirm.hidden = true;
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
      button.textContent = conversation.title || "Untitled conversation";
      button.title = conversation.title;
      button.setAttribute("aria-current", String(current === conversation.id));
      button.addEventListener("click", function () {
        if (narrow.matches) panel.open = false;  // on a phone, the chat comes back into view
        openConversation(conversation.id);
      });
      item.appendChild(button);
      list.appendChild(item);
    });
    return conversations;
  }

  function renderHistory(rows) {
    rows.forEach(function (message, index) {
      const next = rows[index + 1];
      const unfinished = message.role === "assistant" && (message.status === "failed" || message.status === "interrupted");
      if (unfinished && next && next.role === "assistant") return;  // a retry answered it since
      const item = addMessage(message);
      if (unfinished) markUnfinished(item, message.status, "", !next);
    });
  }

  async function openConversation(id) {
    if (busy) return;
    current = id;
    const response = await api("/api/v1/conversations/" + id + "/");
    messages.innerHTML = "";
    if (!response.ok) { statusLine.textContent = await errorMessage(response); return; }
    const conversation = await response.json();
    setTitle(conversation.title);
    renderHistory(conversation.messages);
    statusLine.textContent = "";
    showEmptyState();
    loadConversations();
    input.focus();
  }

  function newConversation() {
    if (busy) return;
    current = null;
    messages.innerHTML = "";
    setTitle("");
    statusLine.textContent = "";
    showEmptyState();
    list.querySelectorAll("button").forEach((b) => b.setAttribute("aria-current", "false"));
    if (narrow.matches) panel.open = false;
    input.focus();
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

  // Sends (body: the message) or retries (body null). `asked` is the student's message shown
  // before the server took it: a refusal removes it and leaves the text in the box to edit.
  async function stream(path, body, asked) {
    busy = true; sendButton.disabled = true;
    statusLine.textContent = "The tutor is writing…";
    let reply = null, text = "", pending = false, ended = false;
    try {
      const response = await api(path, {method: "POST", body: body || undefined});
      if (!response.ok) {
        const message = await errorMessage(response);
        if (asked) { asked.remove(); showEmptyState(); }
        statusLine.textContent = message;
        if (!asked && response.status === 503) {  // the model server is still down: the question still waits
          markUnfinished(addMessage({role: "assistant", content: ""}), "failed", message, true).focus();
        }
        return;
      }
      if (asked) { input.value = ""; updateCounter(); }
      reply = addMessage({role: "assistant", content: ""});
      const target = reply.querySelector(".body");
      await readEvents(response, function (name, data) {
        if (name === "start") {
          reply.dataset.id = data.reply_id;
          if (current === null) { current = data.conversation_id; setTitle(body.content.slice(0, 80)); }
        } else if (name === "token") {
          text += data.text;
          if (!pending) {
            pending = true;
            requestAnimationFrame(() => { pending = false; renderMarkdown(target, text); messages.scrollTop = messages.scrollHeight; });
          }
        } else if (name === "replaced") {
          text = data.text; renderMarkdown(target, text);
        } else if (name === "done") {
          ended = true;
          reply.dataset.id = data.reply.id;
          renderMarkdown(target, data.reply.content);
          reply.appendChild(ratingControls(data.reply));
          statusLine.textContent = "";
        } else if (name === "error") {
          ended = true;
          statusLine.textContent = "";
          markUnfinished(reply, "failed", data.message, true).focus();
        }
      });
      if (!ended) throw new Error("the stream ended early");
    } catch (error) {
      statusLine.textContent = "";
      if (reply === null) {
        if (asked) asked.remove();
        statusLine.textContent = "The tutor could not be reached. Check your connection and send again.";
      } else {
        markUnfinished(reply, text ? "interrupted" : "failed", "The connection to the tutor was lost. Your message is saved.", true).focus();
      }
    } finally {
      busy = false; sendButton.disabled = false;
      if (current !== null) {
        const conversations = await loadConversations();
        const mine = conversations.find((c) => c.id === current);
        if (mine) setTitle(mine.title, true);
      }
    }
  }

  function send(event) {
    event.preventDefault();
    if (busy) return;
    const content = input.value;
    if (!content.trim()) {
      statusLine.textContent = "Write your question first: the message is empty.";
      input.focus();
      return;
    }
    const asked = addMessage({role: "user", content: content.trim()});
    const path = current === null ? "/api/v1/conversations/messages/stream/" : "/api/v1/conversations/" + current + "/messages/stream/";
    stream(path, {content: content}, asked);
  }

  function updateCounter() {
    const length = Array.from(input.value).length;  // characters as the server counts them
    const over = length - limit;
    counter.textContent = length + " / " + limit + " characters" + (over > 0 ? ": " + over + " over the limit" : "");
    counter.classList.toggle("over", over > 0);
    input.setAttribute("aria-invalid", String(over > 0));
  }

  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); form.requestSubmit(); }
  });
  input.addEventListener("input", updateCounter);
  form.addEventListener("submit", send);
  $("new-conversation").addEventListener("click", newConversation);

  emptyState.querySelectorAll("button.example").forEach(function (button) {
    button.addEventListener("click", function () {
      input.value = button.textContent.trim();
      updateCounter();
      input.focus();
    });
  });

  $("rename-conversation").addEventListener("click", function () {
    deleteConfirm.hidden = true;
    renameForm.hidden = false;
    renameInput.value = currentTitle;
    renameInput.focus();
    renameInput.select();
  });
  $("rename-cancel").addEventListener("click", function () { renameForm.hidden = true; $("rename-conversation").focus(); });
  renameForm.addEventListener("submit", async function (event) {
    event.preventDefault();
    const title = renameInput.value.trim();
    if (!title) { statusLine.textContent = "Give the conversation a title first."; renameInput.focus(); return; }
    const response = await api("/api/v1/conversations/" + current + "/", {method: "PATCH", body: {title: title}});
    if (!response.ok) { statusLine.textContent = await errorMessage(response); return; }
    setTitle((await response.json()).title);
    statusLine.textContent = "Renamed.";
    await loadConversations();
    $("rename-conversation").focus();
  });

  $("delete-conversation").addEventListener("click", function () {
    renameForm.hidden = true;
    deleteConfirm.hidden = false;
    $("delete-no").focus();
  });
  $("delete-no").addEventListener("click", function () { deleteConfirm.hidden = true; $("delete-conversation").focus(); });
  $("delete-yes").addEventListener("click", async function () {
    const response = await api("/api/v1/conversations/" + current + "/", {method: "DELETE"});
    if (!response.ok) { deleteConfirm.hidden = true; statusLine.textContent = await errorMessage(response); return; }
    newConversation();
    await loadConversations();
    statusLine.textContent = "The conversation was deleted.";
  });

  // The student's own choice about training, shown always (the page renders its current state).
  const optIn = $("training-opt-in");
  if (optIn) {
    optIn.addEventListener("change", async function () {
      const response = await api("/api/v1/me/training/", {method: "PUT", body: {opted_out: !optIn.checked}});
      $("training-status").textContent = response.ok
        ? (optIn.checked ? "Saved: approved replies may improve the tutor." : "Saved: your conversations will not be used.")
        : await errorMessage(response);
    });
  }

  // On a phone the list folds away so that the conversation and the message box come first.
  panel.open = !narrow.matches;
  narrow.addEventListener("change", (event) => { panel.open = !event.matches; });
  updateCounter();
  showEmptyState();
  loadConversations().then(function (conversations) { if (conversations.length) openConversation(conversations[0].id); });
})();
