// The camera preview, shared by the kiosk screen and live enrolment: a new JPEG only when the
// last has arrived, every `period` ms until `done()` says to stop.
"use strict";
function startPreview(period, done = () => false) {
  const img = document.getElementById("preview");
  let url = null;
  async function next() {
    if (done()) return;
    try {
      const r = await fetch("/display/preview.jpg", { cache: "no-store" });
      if (r.status === 200) {
        const fresh = URL.createObjectURL(await r.blob());
        img.src = fresh;
        if (url) URL.revokeObjectURL(url);
        url = fresh;
      }
    } catch (e) { /* keep the last picture */ }
    setTimeout(next, period);
  }
  next();
}
