// The technician page's few behaviours, in plain JavaScript (no framework, nothing fetched
// from elsewhere): a MAC checked as it is typed, the camera scan where the browser has
// BarcodeDetector, the checklist kept live from the order's event stream, and a push job's
// steps as they happen.
"use strict";

// The spellings the server accepts (README: 00:80:F0:00:00:01, 00-80-f0-00-00-01,
// 0080.f000.0001, 0080f0000001), unicast and not all zeros.
const MAC = /^(?:[0-9a-f]{2}([:-])(?:[0-9a-f]{2}\1){4}[0-9a-f]{2}|[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}|[0-9a-f]{12})$/i;

function macOk(text) {
  const value = text.trim();
  if (!MAC.test(value)) return false;
  const hex = value.replace(/[^0-9a-f]/gi, "");
  return parseInt(hex[1], 16) % 2 === 0 && !/^0+$/.test(hex);
}

function checkMac(input) {
  const hint = input.id === "mac" ? document.getElementById("mac-hint") : null;
  if (!input.value.trim()) {
    input.removeAttribute("aria-invalid");
    input.setCustomValidity("");
    return;
  }
  const ok = macOk(input.value);
  input.setAttribute("aria-invalid", ok ? "false" : "true");
  input.setCustomValidity(ok ? "" : input.dataset.bad);
  if (hint) hint.textContent = ok ? input.dataset.ok : input.dataset.bad;
}

document.addEventListener("input", (e) => {
  if (e.target.classList && e.target.classList.contains("mac")) checkMac(e.target);
});

// ---------------------------------------------------------------- camera scan

async function setupScan() {
  const button = document.getElementById("scan");
  const video = document.getElementById("camera");
  const input = document.getElementById("mac");
  if (!button || !("BarcodeDetector" in window) || !navigator.mediaDevices) return;
  let detector;
  try {
    detector = new window.BarcodeDetector();
  } catch (err) {
    return;
  }
  button.hidden = false;
  let stream = null;
  const stop = () => {
    if (stream) stream.getTracks().forEach((t) => t.stop());
    stream = null;
    video.hidden = true;
    button.textContent = button.dataset.label;
  };
  button.addEventListener("click", async () => {
    if (stream) return stop();
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
    } catch (err) {
      return stop();
    }
    video.srcObject = stream;
    video.hidden = false;
    button.textContent = button.dataset.stop;
    await video.play();
    const look = async () => {
      if (!stream) return;
      try {
        for (const code of await detector.detect(video)) {
          const text = (code.rawValue || "").trim();
          const mac = text.match(/[0-9a-f]{2}(?:[:-]?[0-9a-f]{2}){5}/i);
          if (mac && macOk(mac[0])) {
            input.value = mac[0];
            checkMac(input);
            if (navigator.vibrate) navigator.vibrate(80);
            return stop();
          }
        }
      } catch (err) { /* a frame the detector could not read: try the next */ }
      setTimeout(look, 250);
    };
    look();
  });
}

// ---------------------------------------------------------------- live checklist

function refreshChecklist(page) {
  return fetch(page.dataset.checklist, { credentials: "same-origin", cache: "no-store" })
    .then((r) => (r.ok ? r.text() : Promise.reject(r.status)))
    .then((html) => {
      const fresh = document.createElement("div");
      fresh.innerHTML = html;
      const box = document.getElementById("checklist");
      const oldCards = Array.from(box.querySelectorAll("li.device"));
      const newCards = Array.from(fresh.querySelectorAll("li.device"));
      const sameSet = oldCards.length === newCards.length &&
        oldCards.every((c, i) => c.id === newCards[i].id);
      const busy = box.contains(document.activeElement) ||
        box.querySelector("details[open]") !== null;
      if (!sameSet && !busy) {
        box.replaceChildren(...fresh.childNodes);
        return;
      }
      // Replace only the cards that moved, and never the one the technician is typing in.
      for (const card of newCards) {
        const old = document.getElementById(card.id);
        if (!old) continue;
        if (old.dataset.sig === card.dataset.sig) continue;
        if (old.contains(document.activeElement) || old.querySelector("details[open]")) continue;
        old.replaceWith(card);
      }
      for (const sel of ["#counts"]) {
        const a = box.querySelector(sel);
        const b = fresh.querySelector(sel);
        if (a && b) a.replaceWith(b);
      }
    })
    .catch(() => {});
}

function follow(page) {
  const live = document.getElementById("live");
  let pending = null;
  const source = new EventSource("/api/v1/events?order=" + encodeURIComponent(page.dataset.order));
  const kick = () => {
    if (pending) return;
    pending = setTimeout(() => { pending = null; refreshChecklist(page); }, 50);
  };
  source.addEventListener("open", () => {
    live.classList.add("on");
    live.textContent = live.dataset.on;
  });
  source.addEventListener("error", () => {
    live.classList.remove("on");
    live.textContent = live.dataset.off;
  });
  source.addEventListener("snapshot", kick);
  source.addEventListener("device", kick);
}

// ---------------------------------------------------------------- a push job's steps

function followJob(page) {
  const job = page.dataset.job;
  const steps = document.getElementById("steps");
  const summary = document.getElementById("push-summary");
  if (!job || !steps) return;
  const source = new EventSource("/api/v1/push-jobs/" + job + "/events");
  const line = (text, cls) => {
    const li = document.createElement("li");
    li.textContent = text;
    if (cls) li.className = cls;
    steps.appendChild(li);
  };
  source.addEventListener("step", (e) => {
    const d = JSON.parse(e.data);
    line(d.device + ": " + d.step);
  });
  source.addEventListener("result", (e) => {
    const d = JSON.parse(e.data);
    const good = d.result === "ok" || d.result === "no change" || d.result === "dry-run";
    line(d.device + ": " + d.result + (d.error ? " (" + d.error + ")" : ""),
      "result " + (good ? "done" : "wrong"));
  });
  source.addEventListener("done", (e) => {
    const d = JSON.parse(e.data);
    const parts = Object.entries(d.summary).map(([k, v]) => k + " " + v);
    summary.textContent = summary.dataset.done + parts.join(", ");
    summary.id = "push-done";
    source.close();
    refreshChecklist(page);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.getElementById("page");
  document.querySelectorAll("input.mac").forEach((i) => { if (i.value) checkMac(i); });
  setupScan();
  if (page) {
    follow(page);
    followJob(page);
  }
});
