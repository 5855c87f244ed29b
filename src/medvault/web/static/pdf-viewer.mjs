// The portal's PDF viewer (pdf.js, vendored in /static/pdfjs), inside a frame that is
// sandboxed without allow-same-origin (pdf-viewer.html, and its CSP says so too). The
// document page fetches the PDF through its audited /view route and posts the bytes
// here; this frame has no cookies, no network beyond the portal's static files, and no
// way into the page. A PDF that exploited pdf.js would be stuck in an opaque origin
// holding only itself.
import * as worker from "/static/pdfjs/pdf.worker.min.mjs";
import * as pdfjs from "/static/pdfjs/pdf.min.mjs";

// An opaque-origin frame may not start a worker from the portal's URL. With the worker
// module already loaded, pdf.js runs it on this thread instead of trying.
globalThis.pdfjsWorker = worker;

const MIN_SCALE = 0.25;
const MAX_SCALE = 4;
const STEP = 1.25;

const status = document.querySelector("[data-status]");
const container = document.querySelector("[data-pages]");
const pageOut = document.querySelector("[data-page]");
const countOut = document.querySelector("[data-count]");
const zoomOut = document.querySelector("[data-zoom]");
const prev = document.querySelector("[data-prev]");
const next = document.querySelector("[data-next]");

// The page's words (web/script_messages.py), posted with the document.
let words = {
  "viewer.page_of": "Page %(page)s of %(count)s",
  "viewer.failed": "This PDF cannot be shown here. Download it to open it on your device.",
};

function pageOf(number, count) {
  return words["viewer.page_of"].replace("%(page)s", String(number)).replace("%(count)s", String(count));
}

function useWords(language, given) {
  words = { ...words, ...given };
  document.documentElement.lang = language;
  document.querySelectorAll("[data-text]").forEach((el) => {
    if (words[el.dataset.text]) el.textContent = words[el.dataset.text];
  });
  document.querySelectorAll("[data-label]").forEach((el) => {
    if (words[el.dataset.label]) el.setAttribute("aria-label", words[el.dataset.label]);
  });
  // "Page 3 of 7" keeps its two live numbers wherever the language puts them.
  const where = document.querySelector("[data-where]");
  const parts = words["viewer.page_of"].split(/(%\((?:page|count)\)s)/);
  where.replaceChildren(...parts.map((part) => {
    if (part === "%(page)s") return pageOut;
    if (part === "%(count)s") return countOut;
    return document.createTextNode(part);
  }));
}

let pdf = null;
let started = false;
let pages = []; // { page, base (viewport at scale 1), box, canvas, text, shownAt }
let scale = 1;
let fitWidth = true;
let current = 1;

function fittingScale() {
  const style = getComputedStyle(container);
  const room = container.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  const widest = Math.max(...pages.map((entry) => entry.base.width));
  return Math.min(MAX_SCALE, Math.max(MIN_SCALE, room / widest));
}

function layout() {
  if (fitWidth) scale = fittingScale();
  zoomOut.textContent = `${Math.round(scale * 100)}%`;
  for (const entry of pages) {
    entry.box.style.width = `${Math.floor(entry.base.width * scale)}px`;
    entry.box.style.height = `${Math.floor(entry.base.height * scale)}px`;
    entry.shownAt = null;
  }
  pages.filter((entry) => entry.visible).forEach(draw);
}

async function draw(entry) {
  if (entry.shownAt === scale) return;
  const at = scale;
  entry.shownAt = at;
  const ratio = window.devicePixelRatio || 1;
  const viewport = entry.page.getViewport({ scale: at });
  const canvas = document.createElement("canvas");
  canvas.width = Math.floor(viewport.width * ratio);
  canvas.height = Math.floor(viewport.height * ratio);
  canvas.setAttribute("aria-hidden", "true");
  await entry.page.render({
    canvas,
    viewport,
    transform: ratio === 1 ? undefined : [ratio, 0, 0, ratio, 0, 0],
  }).promise;
  if (entry.shownAt !== at) return; // zoomed again meanwhile
  const text = document.createElement("div");
  text.className = "textLayer";
  text.style.setProperty("--total-scale-factor", String(at));
  const layer = new pdfjs.TextLayer({
    textContentSource: entry.page.streamTextContent(),
    container: text,
    viewport,
  });
  await layer.render();
  if (entry.shownAt !== at) return;
  entry.box.replaceChildren(canvas, text);
}

function setCurrent(number) {
  current = number;
  pageOut.textContent = String(number);
  prev.disabled = number <= 1;
  next.disabled = number >= pages.length;
}

function goTo(number) {
  const entry = pages[number - 1];
  if (!entry) return;
  container.scrollTo({ top: entry.box.offsetTop - container.offsetTop - 8 });
  setCurrent(number);
}

async function open(data) {
  pdf = await pdfjs.getDocument({
    data,
    // No eval: the strict CSP forbids it anyway, and CVE-2024-4367 went through it.
    isEvalSupported: false,
    enableXfa: false,
    standardFontDataUrl: "/static/pdfjs/standard_fonts/",
  }).promise;
  countOut.textContent = String(pdf.numPages);
  const seen = new IntersectionObserver(
    (changes) => {
      for (const change of changes) {
        const entry = pages[Number(change.target.dataset.number) - 1];
        entry.visible = change.isIntersecting;
        if (change.isIntersecting) draw(entry);
      }
      const first = pages.find((entry) => entry.visible);
      if (first) setCurrent(first.number);
    },
    { root: container, rootMargin: "200px 0px" },
  );
  for (let number = 1; number <= pdf.numPages; number += 1) {
    const page = await pdf.getPage(number);
    const box = document.createElement("div");
    box.className = "page";
    box.dataset.number = String(number);
    box.setAttribute("role", "region");
    box.setAttribute("aria-label", pageOf(number, pdf.numPages));
    container.appendChild(box);
    pages.push({ number, page, base: page.getViewport({ scale: 1 }), box, visible: false, shownAt: null });
  }
  layout();
  pages.forEach((entry) => seen.observe(entry.box));
  setCurrent(1);
  status.textContent = "";
  document.body.dataset.state = "ready";
}

function zoom(factor) {
  fitWidth = false;
  scale = Math.min(MAX_SCALE, Math.max(MIN_SCALE, scale * factor));
  layout();
}

prev.addEventListener("click", () => goTo(current - 1));
next.addEventListener("click", () => goTo(current + 1));
document.querySelector("[data-zoom-in]").addEventListener("click", () => zoom(STEP));
document.querySelector("[data-zoom-out]").addEventListener("click", () => zoom(1 / STEP));
document.querySelector("[data-fit]").addEventListener("click", () => {
  fitWidth = true;
  layout();
});
window.addEventListener("resize", () => {
  if (fitWidth && pages.length) layout();
});
container.addEventListener("keydown", (event) => {
  if (event.key === "PageDown" && current < pages.length) goTo(current + 1);
  else if (event.key === "PageUp" && current > 1) goTo(current - 1);
  else return;
  event.preventDefault();
});

window.addEventListener("message", (event) => {
  if (event.source !== window.parent) return;
  // The page asks again in case it was not listening yet when this frame said so.
  if (event.data && event.data.ping) {
    window.parent.postMessage({ viewer: "ready" }, "*");
    return;
  }
  // Only the page this frame is in may hand it a document, once.
  if (started) return;
  const bytes = event.data && event.data.pdf;
  if (!(bytes instanceof ArrayBuffer)) return;
  started = true;
  if (event.data.words) useWords(String(event.data.language || "en"), event.data.words);
  open(new Uint8Array(bytes)).catch(() => {
    document.body.dataset.state = "failed";
    status.textContent = words["viewer.failed"];
  });
});
window.parent.postMessage({ viewer: "ready" }, "*");
