// Small progressive enhancements; every page also works without this script.
"use strict";

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.getAttribute("content") : "";
}

// The page's words for scripts, translated by the server (web/script_messages.py):
// t(key, {name: value}) and, for counts, tn(key, n). Values are written %(name)s.
const portalText = (() => {
  const block = document.getElementById("portal-messages");
  const data = block ? JSON.parse(block.textContent) : { language: "en", messages: {}, plurals: {} };
  const fill = (text, values) => text.replace(/%\((\w+)\)s/g, (whole, name) =>
    (values && name in values ? String(values[name]) : whole));
  const rules = new Intl.PluralRules(data.language);
  const t = (key, values) => fill(data.messages[key] || key, values);
  const tn = (key, count, values) => {
    const forms = data.plurals[key] || {};
    const form = forms[rules.select(count)] || forms.other || key;
    return fill(form, { num: count, ...values });
  };
  // 1536 → "1.5 KB": decimal units, as the server's human_size writes them.
  const size = (bytes) => {
    if (bytes < 1000) return tn("size.bytes", bytes);
    let value = bytes;
    for (const unit of ["KB", "MB", "GB", "TB"]) {
      value /= 1000;
      if (value < 1000 || unit === "TB") return `${value < 100 ? value.toFixed(1) : value.toFixed(0)} ${t(`size.${unit}`)}`;
    }
    return tn("size.bytes", bytes);
  };
  return { language: data.language, t, tn, size };
})();
window.portalText = portalText;
const t = portalText.t;
const tn = portalText.tn;

// Resumable uploads keep their address in this browser, and the file's name in this tab
// (resumable.js), so that a reload can continue them. Logging out forgets both: the next
// person at this browser finds nothing (what the server received expires by itself).
const UNFINISHED_UPLOADS = "medvault-upload::";
function forgetUnfinishedUploads() {
  for (const store of ["localStorage", "sessionStorage"]) {
    try {
      const kept = window[store];
      for (let i = kept.length - 1; i >= 0; i -= 1) {
        const key = kept.key(i);
        if (key && key.startsWith(UNFINISHED_UPLOADS)) kept.removeItem(key);
      }
    } catch (error) {
      // No storage (a private window, say): nothing was kept.
    }
  }
}

// Other scripts tell the idle countdown when the server has just seen this session
// (an upload's requests do); set below once the countdown exists.
window.portalSession = { seen: () => {} };

document.addEventListener("DOMContentLoaded", () => {
  // The document page's PDF viewer. The frame is sandboxed (no cookies, no way into
  // this page), so this page fetches the PDF through the audited /view route and posts
  // the bytes in. A large file waits for a click rather than being read on every visit.
  const viewer = document.querySelector("[data-pdf-viewer]");
  if (viewer) {
    const frame = viewer.querySelector("iframe");
    const fallback = document.querySelector("[data-preview-fallback]");
    const LARGE = 25 * 1000 * 1000;
    let wanted = Number(viewer.dataset.size) <= LARGE;
    let ready = false;
    const deliver = async () => {
      if (!wanted || !ready) return;
      wanted = false;
      viewer.hidden = false;
      if (fallback) fallback.hidden = true;
      try {
        const response = await fetch(viewer.dataset.src, { credentials: "same-origin" });
        if (!response.ok) throw new Error(String(response.status));
        const bytes = await response.arrayBuffer();
        // The viewer's toolbar words, in the page's language (on the viewer's element).
        const words = JSON.parse(viewer.dataset.words || "{}");
        frame.contentWindow.postMessage(
          { pdf: bytes, language: portalText.language, words }, "*", [bytes]);
      } catch (error) {
        viewer.hidden = true;
        if (fallback) fallback.hidden = false;
      }
    };
    window.addEventListener("message", (event) => {
      if (event.source !== frame.contentWindow || !event.data || event.data.viewer !== "ready") return;
      ready = true;
      deliver();
    });
    // In case the frame said "ready" before this listener existed.
    frame.contentWindow.postMessage({ ping: true }, "*");
    if (!wanted) {
      const open = document.createElement("button");
      open.type = "button";
      open.className = "button secondary";
      open.textContent = t("viewer.show", { size: viewer.dataset.sizeLabel });
      open.addEventListener("click", () => {
        open.remove();
        wanted = true;
        deliver();
        frame.focus();
      });
      viewer.insertAdjacentElement("beforebegin", open);
    }
  }

  // Documents list: "Select all on this page", a count of what is ticked, and no ZIP
  // of nothing (the server says so too, for a browser without this script).
  const bulk = document.querySelector("form[data-bulk]");
  if (bulk) {
    const picks = Array.from(document.querySelectorAll("input[data-pick]"));
    const all = document.querySelector("input[data-select-all]");
    const count = bulk.querySelector("[data-bulk-count]");
    const submit = bulk.querySelector("button[type=submit]");
    const update = () => {
      const ticked = picks.filter((pick) => pick.checked).length;
      count.textContent = ticked === 0 ? t("bulk.none") : tn("bulk.selected", ticked);
      submit.disabled = ticked === 0;
      if (all) {
        all.checked = ticked > 0 && ticked === picks.length;
        all.indeterminate = ticked > 0 && ticked < picks.length;
      }
    };
    if (all && picks.length) {
      all.hidden = false;
      all.addEventListener("change", () => {
        picks.forEach((pick) => { pick.checked = all.checked; });
        update();
      });
    }
    picks.forEach((pick) => pick.addEventListener("change", update));
    update();
  }

  // The login form sends the browser's IANA time zone: times are then shown in it.
  for (const field of document.querySelectorAll("input[data-browser-time-zone]")) {
    field.value = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
  }

  // Session-expiry warning: shortly before the idle limit would end the session, offer
  // "Stay logged in". At the limit the page saves its draft, logs out (so an unattended
  // screen shows nothing more), hides its content and offers to log in again, back
  // here. sessionSeen() restarts the countdown whenever the server has just seen this
  // session (a page load, an autosave, a keep-alive).
  let sessionSeen = () => {};
  // Set by the autosave below: save now whatever has not been saved yet.
  let flushDraft = async () => {};
  const idleMeta = document.querySelector('meta[name="session-idle-seconds"]');
  const warning = document.getElementById("session-warning");
  if (idleMeta && warning && typeof warning.showModal === "function") {
    const idleMs = Number(idleMeta.getAttribute("content")) * 1000;
    const leadMs = Math.min(120000, idleMs / 4);
    const text = warning.querySelector("[data-session-warning-text]");
    const stay = warning.querySelector("[data-stay-signed-in]");
    const again = warning.querySelector("[data-session-ended]");
    const drafting = document.querySelector("form[data-autosave]") !== null;
    let warnTimer = null;
    let endTimer = null;
    const ended = async () => {
      clearTimeout(warnTimer);
      clearTimeout(endTimer);
      await flushDraft();
      forgetUnfinishedUploads();
      try {
        await fetch("/logout", {
          method: "POST",
          headers: { "X-CSRF-Token": csrfToken() },
          credentials: "same-origin",
          redirect: "manual",
        });
      } catch (error) {
        // The server ends an idle session by itself anyway.
      }
      const main = document.getElementById("main");
      if (main) main.hidden = true;
      text.textContent = drafting ? t("session.ended_draft") : t("session.ended");
      stay.hidden = true;
      again.hidden = false;
      again.href = `/login?next=${encodeURIComponent(window.location.pathname)}`;
      if (!warning.open) warning.showModal();
      again.focus();
    };
    sessionSeen = () => {
      clearTimeout(warnTimer);
      clearTimeout(endTimer);
      warnTimer = setTimeout(() => {
        const minutes = Math.max(1, Math.round(leadMs / 60000));
        text.textContent = tn("session.warning", minutes);
        if (!warning.open) warning.showModal();
        stay.focus();
      }, idleMs - leadMs);
      endTimer = setTimeout(ended, idleMs);
    };
    stay.addEventListener("click", async () => {
      try {
        const response = await fetch("/session/keepalive", {
          method: "POST",
          headers: { "X-CSRF-Token": csrfToken() },
          credentials: "same-origin",
        });
        if (response.ok) {
          warning.close();
          sessionSeen();
          return;
        }
      } catch (error) {
        // Fall through: without an answer the session cannot be known to be alive.
      }
      ended();
    });
    sessionSeen();
    window.portalSession.seen = () => sessionSeen();
  }

  document.querySelectorAll('form[action="/logout"]').forEach((form) => {
    form.addEventListener("submit", forgetUnfinishedUploads);
  });

  // Phones: the documents filter folds behind one "Filter" button, so the first screen
  // shows documents, not five fields; it stays open while a filter is in use.
  const narrow = window.matchMedia("(max-width: 40rem)");
  document.querySelectorAll("details[data-fold-filters]").forEach((fold) => {
    const fit = () => { fold.open = !narrow.matches || fold.hasAttribute("data-active"); };
    fit();
    narrow.addEventListener("change", fit);
  });

  // Create document: autosave. While the form changes, post it at most every five
  // seconds (the server keeps it sealed, for this user only), and once more when the
  // page is hidden. Without JavaScript nothing autosaves.
  const AUTOSAVE_MS = 5000;
  document.querySelectorAll("form[data-autosave]").forEach((form) => {
    const url = form.getAttribute("data-autosave");
    const status = form.querySelector("[data-autosave-status]");
    let dirty = false;
    let saving = false;
    let timer = null;
    const fields = () => new URLSearchParams(new FormData(form));
    const save = async () => {
      timer = null;
      if (!dirty || saving) return;
      dirty = false;
      saving = true;
      try {
        const response = await fetch(url, {
          method: "POST",
          body: fields(),
          headers: { "Accept": "application/json", "X-CSRF-Token": csrfToken() },
          credentials: "same-origin",
        });
        if (response.ok) {
          const saved = await response.json();
          const at = new Date(saved.saved_at).toLocaleTimeString(portalText.language, { hour: "2-digit", minute: "2-digit" });
          status.textContent = t("draft.saved", { time: at });
          status.dataset.savedAt = saved.saved_at;
          sessionSeen();
        } else {
          dirty = true;
          status.textContent = t("draft.refused");
        }
      } catch (error) {
        dirty = true;
        status.textContent = t("draft.offline");
      } finally {
        saving = false;
        if (dirty && timer === null) timer = setTimeout(save, AUTOSAVE_MS);
      }
    };
    const changed = () => {
      dirty = true;
      if (timer === null) timer = setTimeout(save, AUTOSAVE_MS);
    };
    form.addEventListener("input", changed);
    form.addEventListener("change", changed);
    flushDraft = async () => {
      clearTimeout(timer);
      timer = null;
      await save();
    };
    document.addEventListener("visibilitychange", () => {
      // A beacon cannot carry the header; the form's own csrf_token field goes instead.
      if (document.visibilityState === "hidden" && dirty) {
        dirty = false;
        navigator.sendBeacon(url, fields());
      }
    });
  });

  // Create Document preview: load the PDF into its frame as soon as the page opens.
  document.querySelectorAll("form[data-autosubmit]").forEach((form) => form.submit());

  // Confirm dialogs: the link still leads to a confirmation page without JavaScript.
  document.querySelectorAll("[data-open-dialog]").forEach((opener) => {
    const dialog = document.getElementById(opener.getAttribute("data-open-dialog"));
    if (!dialog || typeof dialog.showModal !== "function") return;
    opener.addEventListener("click", (event) => {
      event.preventDefault();
      dialog.showModal();
      const first = dialog.querySelector("textarea, input:not([type=hidden]), button");
      if (first) first.focus();
    });
  });
  document.querySelectorAll("[data-close-dialog]").forEach((button) => {
    button.addEventListener("click", () => button.closest("dialog").close());
  });

  // "Copy download link": ask for a link, then put it on the clipboard.
  document.querySelectorAll("form[data-copy-link]").forEach((form) => {
    const status = form.parentElement.querySelector(".link-result");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      status.textContent = t("link.creating");
      try {
        const response = await fetch(form.action, {
          method: "POST",
          headers: { "Accept": "application/json", "X-CSRF-Token": csrfToken() },
          body: new URLSearchParams(new FormData(form)),
          credentials: "same-origin",
        });
        const body = await response.json();
        if (!response.ok) {
          status.textContent = body.detail || body.title || t("link.failed");
          return;
        }
        const expires = new Date(body.expires_at).toLocaleString(portalText.language);
        try {
          await navigator.clipboard.writeText(body.url);
          status.textContent = t("link.copied", { time: expires });
        } catch (error) {
          status.textContent = t("link.copy_this", { time: expires });
          const input = document.createElement("input");
          input.readOnly = true;
          input.value = body.url;
          input.setAttribute("aria-label", t("link.label"));
          status.appendChild(input);
          input.select();
        }
        status.dataset.url = body.url;
      } catch (error) {
        status.textContent = t("link.offline");
      }
    });
  });

  // Create document: "Add another …" adds one blank row to its own list, in place, and
  // puts the focus in it; nothing else on the page moves. Without JavaScript the button
  // posts the form back and the server adds the row (compose_edit).
  document.querySelectorAll("button[data-add-row]").forEach((button) => {
    button.addEventListener("click", (event) => {
      const list = button.getAttribute("data-add-row");
      const fieldset = button.closest(`[data-rows="${list}"]`);
      const rows = fieldset ? fieldset.querySelectorAll("[data-row]") : [];
      if (!rows.length) return; // let the form post instead
      event.preventDefault();
      const index = rows.length;
      const last = rows[rows.length - 1];
      const row = last.cloneNode(true);
      const prefix = new RegExp(`^${list}-\\d+-`);
      row.querySelectorAll("*").forEach((el) => {
        for (const attr of ["id", "name", "for"]) {
          const value = el.getAttribute(attr);
          if (value && prefix.test(value)) {
            el.setAttribute(attr, value.replace(prefix, `${list}-${index}-`));
          }
        }
        // The copied row's errors belong to the row it was copied from.
        el.removeAttribute("aria-invalid");
        el.removeAttribute("aria-describedby");
        el.removeAttribute("autofocus");
      });
      row.querySelectorAll("p.error").forEach((message) => message.remove());
      row.querySelectorAll("input").forEach((input) => { input.value = ""; });
      row.querySelectorAll("select").forEach((select) => { select.selectedIndex = 0; });
      row.querySelectorAll(".visually-hidden").forEach((hint) => {
        hint.textContent = hint.textContent.replace(/\d+\)$/, `${index + 1})`);
      });
      last.after(row);
      const first = row.querySelector("input, select");
      if (first) first.focus();
      if (index + 1 >= Number(button.dataset.maxRows)) button.hidden = true;
    });
  });
});
