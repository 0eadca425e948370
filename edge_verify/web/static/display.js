// The kiosk screen: poll the status; the preview comes from preview.js.
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

setInterval(status, 400);
status();
startPreview(125);
