// Administrators' tools on the launch page: the course's training at a glance (what serves the
// course, its latest job and progress, why it failed) and Retrain, through the training API with
// the launch token. It is polled while a job runs, and updated in place.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const api = window.tutorApi.api, errorMessage = window.tutorApi.errorMessage;
  const panel = $("admin-training");
  if (!panel) return;
  const POLL_ACTIVE_MS = 2000;
  const STATES = {
    queued: "Queued", validating: "Validating the dataset", training: "Training", evaluating: "Evaluating",
    ready: "Ready: waiting for your decision on the training page", promoted: "Promoted: it serves the course",
    rejected: "Rejected", failed: "Failed", cancelled: "Cancelled",
  };
  let timer = null;

  function show(status) {
    $("admin-serving").textContent = status.serving
      ? "The course is served by the adapter " + status.serving + "."
      : "The course is served by the base model (no adapter yet).";
    $("admin-serving").classList.remove("muted");
    const job = status.latest;
    $("admin-job").hidden = !job;
    if (job) {
      $("admin-job-title").textContent = "Job " + job.id + ": " + (STATES[job.state] || job.state);
      const progress = $("admin-progress");
      if (job.total_steps) {
        progress.max = job.total_steps;
        progress.value = job.step;
        $("admin-progress-text").textContent = "step " + job.step + " of " + job.total_steps +
          (status.active && job.phase ? " · " + job.phase : "");
      } else {
        progress.removeAttribute("value");  // indeterminate: not started yet
        $("admin-progress-text").textContent = status.active ? job.phase : "";
      }
      $("admin-progress-line").hidden = !status.active && !job.total_steps;
      const failure = $("admin-failure");
      failure.hidden = job.state !== "failed" || !job.error;
      failure.textContent = failure.hidden ? "" : "Why it failed: " + job.error.split("\n")[0];
    }
    const retrain = $("admin-retrain");
    retrain.disabled = status.active;
    retrain.title = status.active ? "A job is in progress: retrain when it ends." : "";
    if (status.active) $("admin-retrain-status").textContent = "A job is in progress: you can retrain when it ends.";
    else if ($("admin-retrain-status").dataset.kind === "busy") $("admin-retrain-status").textContent = "";
    $("admin-retrain-status").dataset.kind = status.active ? "busy" : "";
  }

  async function refresh() {
    clearTimeout(timer);
    try {
      const response = await api("/api/v1/course/training/");
      if (!response.ok) {
        $("admin-serving").textContent = await errorMessage(response);
        return;
      }
      const status = await response.json();
      show(status);
      if (status.active) timer = setTimeout(refresh, POLL_ACTIVE_MS);
    } catch (e) {
      $("admin-serving").textContent = "The course's training could not be read; it is tried again shortly.";
      timer = setTimeout(refresh, POLL_ACTIVE_MS * 5);
    }
  }

  $("admin-retrain").addEventListener("click", async function () {
    const retrain = $("admin-retrain"), status = $("admin-retrain-status");
    retrain.disabled = true;
    status.textContent = "Starting…";
    const response = await api("/api/v1/course/training-jobs/", {method: "POST", body: {}});
    status.dataset.kind = "";
    status.textContent = response.ok ? "" : await errorMessage(response);
    refresh();
  });

  refresh();
})();
