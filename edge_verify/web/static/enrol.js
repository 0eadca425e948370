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

let url = null;
async function preview() {
  if (document.body.dataset.enrol) return;
  try {
    const r = await fetch("/display/preview.jpg", { cache: "no-store" });
    if (r.status === 200) {
      const next = URL.createObjectURL(await r.blob());
      $("preview").src = next;
      if (url) URL.revokeObjectURL(url);
      url = next;
    }
  } catch (e) { /* keep the last picture */ }
  setTimeout(preview, 150);
}

poll();
preview();
