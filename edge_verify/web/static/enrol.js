// Live enrolment: the camera preview and the job's feedback until it ends.
"use strict";
const $ = (id) => document.getElementById(id);
const job = $("feedback").dataset.job;

async function poll() {
  try {
    const j = await (await fetch(`/admin/people/enrol/${job}/status`, { cache: "no-store" })).json();
    $("feedback").textContent = j.feedback;
    $("good").textContent = j.good;
    if (j.state !== "collecting") {
      $("result").textContent = j.message;
      $("result").className = j.state === "enrolled" ? "ok" : "error";
      document.body.dataset.enrol = j.state;
      return;
    }
  } catch (e) { /* retry */ }
  setTimeout(poll, 300);
}

poll();
startPreview(150, () => Boolean(document.body.dataset.enrol));
