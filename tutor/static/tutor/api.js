// The tool's pages call its API with the launch token (no third-party cookie needed): window.tutorApi.
(function () {
  "use strict";
  const token = document.querySelector('meta[name="launch-token"]').content;

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

  window.tutorApi = {api: api, errorMessage: errorMessage, renderMarkdown: window.tutorRender.markdown};  // render.js
})();
