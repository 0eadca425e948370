// The kiosk screen: poll the status and the preview (a new JPEG only when the last has arrived).
"use strict";
const $ = (id) => document.getElementById(id);
const WORDS = {
  "waiting for a face": "Please look at the camera",
  "starting": "Starting…",
  "camera lost": "Camera not available",
  "locked": "Please wait",
  "store busy": "Please wait",
  "stopped": "The kiosk is not running",
};

async function status() {
  try {
    const s = await (await fetch("/display/status", { cache: "no-store" })).json();
    let prompt = s.prompt || WORDS[s.state] || "";
    let progress = s.of ? `Step ${Math.min(s.step + 1, s.of)} of ${s.of}` : "";
    let outcome = "", kind = "";
    if (s.outcome) {
      kind = s.outcome.accepted ? "accepted" : "refused";
      outcome = s.outcome.accepted ? `Welcome ${s.outcome.name}` :
        s.outcome.reason === "liveness" ? "Check not passed" : "Not recognised";
      prompt = ""; progress = "";
    } else if (s.instruction) {
      prompt = s.instruction;
    }
    $("prompt").textContent = prompt;
    $("progress").textContent = progress;
    $("outcome").textContent = outcome;
    document.body.dataset.outcome = kind;
    document.body.dataset.state = s.state;
  } catch (e) { /* the server restarts: keep the last screen */ }
}

let url = null;
async function preview() {
  try {
    const r = await fetch("/display/preview.jpg", { cache: "no-store" });
    if (r.status === 200) {
      const next = URL.createObjectURL(await r.blob());
      $("preview").src = next;
      if (url) URL.revokeObjectURL(url);
      url = next;
    }
  } catch (e) { /* keep the last picture */ }
  setTimeout(preview, 125);
}

setInterval(status, 400);
status();
preview();
