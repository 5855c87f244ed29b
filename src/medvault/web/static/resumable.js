// Large files, resumably: tus 1.0.0 through the vendored tus-js-client (static/tus/),
// against the portal's /upload/resumable. Each file shows the bytes sent, and has Pause,
// Resume and Cancel (which deletes what the server received). A lost connection is
// retried, or continued once the browser is back online; after a reload the page lists
// the uploads it did not finish, and choosing the same file again continues it.
"use strict";

window.portalResumable = (() => {
  const tus = window.tus;
  if (!tus || !tus.isSupported) return null;
  const { t, size, language } = window.portalText;
  // The portal's own keys (portal.js forgets them at logout).
  const PREFIX = "medvault-upload::";
  // After a failed request: again at once, then ever later. The server answers 423 while
  // the lease of a request that died runs out (30 s by default), so the last waits cover it.
  const RETRY_DELAYS = [0, 1000, 3000, 5000, 10000, 15000, 30000];
  const percent = new Intl.NumberFormat(language, { style: "percent", maximumFractionDigits: 0 });

  function csrfToken() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  // Fingerprints are hashed (below), which needs a secure context (HTTPS, or localhost).
  const storable = (() => {
    if (!window.crypto || !window.crypto.subtle) return false;
    try {
      localStorage.setItem(`${PREFIX}probe`, "1");
      localStorage.removeItem(`${PREFIX}probe`);
      return true;
    } catch (error) {
      return false; // a private window, say: uploads still resume, but not after a reload
    }
  })();

  // A file's name often holds a patient's: it is kept for this tab only (it survives a
  // reload, not the tab), never in the browser's lasting storage.
  function nameOf(key) {
    try {
      return sessionStorage.getItem(key) || "";
    } catch (error) {
      return "";
    }
  }

  function entries(prefix) {
    const found = [];
    for (let i = 0; i < localStorage.length; i += 1) {
      const key = localStorage.key(i);
      if (!key || !key.startsWith(prefix) || key === `${PREFIX}probe`) continue;
      try {
        found.push({ ...JSON.parse(localStorage.getItem(key)), urlStorageKey: key });
      } catch (error) {
        // A malformed entry is left out.
      }
    }
    return found;
  }

  // tus-js-client's URL storage, keeping what resuming needs and no more: the upload's
  // address, the file's size, and the document a new version is for, under a hash of
  // the file's fingerprint. The file's name stays in this tab (``nameOf``); the patient,
  // type, title and description stay on the server.
  const urlStorage = {
    findAllUploads: () => Promise.resolve(entries(PREFIX)),
    findUploadsByFingerprint: (fingerprint) => Promise.resolve(entries(`${PREFIX}${fingerprint}::`)),
    removeUpload: (key) => {
      localStorage.removeItem(key);
      try {
        sessionStorage.removeItem(key);
      } catch (error) {
        // No session storage: no name was kept.
      }
      return Promise.resolve();
    },
    addUpload: (fingerprint, upload) => {
      const key = `${PREFIX}${fingerprint}::${Date.now().toString(36)}${Math.random().toString(36).slice(2)}`;
      const metadata = upload.metadata || {};
      try {
        localStorage.setItem(key, JSON.stringify({
          uploadUrl: upload.uploadUrl,
          size: upload.size,
          creationTime: upload.creationTime,
          metadata: { document_id: metadata.document_id },
        }));
      } catch (error) {
        return Promise.resolve(null); // storage full: this upload resumes, but not after a reload
      }
      try {
        sessionStorage.setItem(key, metadata.filename || "");
      } catch (error) {
        // The row is then shown by its size alone.
      }
      return Promise.resolve(key);
    },
  };

  // The same file for the same target (a new document, or a new version of one
  // document), hashed: the file's name is part of it, and must not be readable in it.
  async function fingerprint(file, options) {
    const target = options.metadata.document_id || "new";
    const text = [target, file.size, file.lastModified, file.type, file.name].join("/");
    const digest = await window.crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
    return Array.from(new Uint8Array(digest), (byte) => byte.toString(16).padStart(2, "0")).join("");
  }

  function problemOf(response) {
    try {
      return JSON.parse(response.getBody() || "null");
    } catch (error) {
      return null;
    }
  }

  function statusOf(error) {
    return error && error.originalResponse ? error.originalResponse.getStatus() : 0;
  }

  // Retry what may pass by itself: no answer, a server error, an upload still held by a
  // request that died (423), or an offset that moved under such a request (409). Not a
  // refusal (the type, the size, a duplicate): that answer would not change. Offline,
  // nothing is tried until the browser is back online.
  function onShouldRetry(error) {
    if (navigator.onLine === false) return false;
    const status = statusOf(error);
    if (status === 0 || status === 423 || status >= 500) return true;
    const problem = status === 409 ? problemOf(error.originalResponse) : null;
    return Boolean(problem && String(problem.type).endsWith(":upload-offset-mismatch"));
  }

  function options(config, metadata, handlers) {
    return {
      endpoint: config.endpoint,
      chunkSize: config.chunkBytes,
      retryDelays: RETRY_DELAYS,
      metadata,
      // The session's CSRF token on every request; problems come back as JSON.
      headers: { "X-CSRF-Token": csrfToken(), "Accept": "application/json" },
      fingerprint,
      urlStorage,
      storeFingerprintForResuming: storable,
      removeFingerprintOnSuccess: true,
      onShouldRetry,
      ...handlers,
    };
  }

  // The server keeps Upload-Metadata up to 4096 characters (uploads.protocol): a longer
  // description goes the single-request way instead.
  const MAX_METADATA_CHARS = 4096;
  const encoder = new TextEncoder();
  function fits(metadata) {
    const chars = Object.entries(metadata).reduce(
      (total, [key, value]) => total + key.length + 2 + Math.ceil(encoder.encode(value).length / 3) * 4,
      0,
    );
    return chars <= MAX_METADATA_CHARS;
  }

  function button(text, label) {
    const element = document.createElement("button");
    element.type = "button";
    element.className = "button small secondary";
    element.textContent = text;
    element.setAttribute("aria-label", label);
    return element;
  }

  function sentText(bytes, total) {
    const ratio = total > 0 ? Math.floor((bytes / total) * 100) / 100 : 0;
    return t("upload.sent", { sent: size(bytes), total: size(total), percent: percent.format(ratio) });
  }

  // Progress, the bytes sent, and Pause / Resume / Cancel, in a file's row.
  function controls(item, status, file) {
    let progress = item.querySelector("progress");
    if (!progress) {
      progress = document.createElement("progress");
      item.insertBefore(progress, status);
    }
    progress.max = file.size;
    progress.setAttribute("aria-label", t("upload.progress_label", { name: file.name }));
    let sent = item.querySelector(".upload-sent");
    if (!sent) {
      sent = document.createElement("span");
      sent.className = "upload-sent";
      item.insertBefore(sent, status);
    }
    // Where the keyboard goes when the buttons it was on are gone.
    item.tabIndex = -1;
    const buttons = document.createElement("span");
    buttons.className = "upload-buttons";
    const pause = button(t("upload.pause"), t("upload.pause_label", { name: file.name }));
    const resume = button(t("upload.resume"), t("upload.resume_label", { name: file.name }));
    const cancel = button(t("upload.cancel"), t("upload.cancel_label", { name: file.name }));
    resume.hidden = true;
    buttons.append(pause, resume, cancel);
    item.append(buttons);
    return { progress, sent, buttons, pause, resume, cancel };
  }

  // Sends one file, or continues the stored upload ``previous`` with it. Continuing never
  // starts a new upload: the fields it was created with are on the server, not here.
  function run(config, item, status, file, metadata, outcome, previous) {
    const ui = controls(item, status, file);
    let state = "running";
    let upload = null;
    const show = (bytes) => {
      ui.progress.value = bytes;
      ui.sent.textContent = sentText(bytes, file.size);
    };
    // Pause and Resume take each other's place; the keyboard stays on whichever shows.
    const stopped = (words) => {
      const focused = document.activeElement === ui.pause;
      status.textContent = words;
      ui.pause.hidden = true;
      ui.resume.hidden = false;
      if (focused) ui.resume.focus();
    };
    const going = () => {
      const focused = document.activeElement === ui.resume;
      ui.resume.hidden = true;
      ui.pause.hidden = false;
      if (focused) ui.pause.focus();
    };
    const over = () => {
      state = "over";
      window.removeEventListener("online", onOnline);
      const focused = ui.buttons.contains(document.activeElement);
      ui.buttons.remove();
      if (focused) item.focus();
    };
    const forget = () => {
      upload.findPreviousUploads().then((found) => {
        for (const entry of found) {
          if (entry.uploadUrl === upload.url) urlStorage.removeUpload(entry.urlStorageKey);
        }
      });
    };
    const resumeNow = () => {
      if (state === "over") return;
      state = "running";
      going();
      status.textContent = t("upload.resuming");
      upload.start();
    };
    const onOnline = () => {
      if (state === "offline") resumeNow();
    };

    const settings = previous ? { ...config, endpoint: null } : config;
    upload = new tus.Upload(file, options(settings, metadata, {
      onProgress: (bytes) => show(bytes),
      onChunkComplete: (chunk, accepted) => {
        show(accepted);
        // After "Resuming…"; not again and again, which a screen reader would read out.
        const going = t("upload.uploading");
        if (state === "running" && status.textContent !== going) status.textContent = going;
        window.portalSession.seen();
      },
      onSuccess: ({ lastResponse }) => {
        show(file.size);
        over();
        outcome.stored(lastResponse.getHeader("Medvault-Document-Id"));
      },
      onError: (error) => {
        const httpStatus = statusOf(error);
        if (httpStatus === 0 && navigator.onLine === false) {
          state = "offline";
          stopped(t("upload.offline"));
          return;
        }
        if (httpStatus === 0 || httpStatus === 423 || httpStatus >= 500) {
          state = "stalled";
          stopped(t("upload.stalled"));
          return;
        }
        over();
        ui.progress.remove();
        ui.sent.remove();
        // Refused for good: the server keeps nothing, nor does this browser. A lapsed
        // session or CSRF token is not the upload's fault: it continues after a login.
        if (![401, 403, 429].includes(httpStatus)) forget();
        const asked = error.originalRequest ? error.originalRequest.getMethod() : "";
        if (previous && asked === "HEAD") {
          // The upload a reload left expired or was ended meanwhile: nothing to go on with.
          outcome.refused(httpStatus, { detail: t("upload.gone") });
          return;
        }
        outcome.refused(httpStatus, problemOf(error.originalResponse));
      },
    }));
    window.addEventListener("online", onOnline);

    ui.pause.addEventListener("click", () => {
      state = "paused";
      upload.abort();
      stopped(t("upload.paused"));
    });
    ui.resume.addEventListener("click", resumeNow);
    ui.cancel.addEventListener("click", () => {
      over();
      status.textContent = t("upload.cancelling");
      // abort(true): stop, then DELETE the upload (tus termination), retried like the rest.
      upload.abort(true).then(
        () => {
          item.classList.add("cancelled");
          ui.progress.remove();
          ui.sent.remove();
          status.textContent = t("upload.cancelled");
        },
        () => {
          item.classList.add("failed");
          status.textContent = t("upload.cancel_failed");
        },
      );
    });

    show(0);
    status.textContent = previous ? t("upload.resuming") : t("upload.uploading");
    if (previous) {
      upload.resumeFromPreviousUpload(previous);
      upload.start();
      return;
    }
    upload.start();
  }

  // An upload a reload interrupted: how far it got, and a way to continue or discard it.
  function unfinishedRow(config, list, entry, offset, finished) {
    const known = nameOf(entry.urlStorageKey);
    // Another tab, or after the browser was closed: the file is named by its size.
    const name = known || t("upload.unnamed_file", { size: size(entry.size) });
    const item = document.createElement("li");
    item.className = "upload-item interrupted";
    item.tabIndex = -1;
    const label = document.createElement("span");
    label.className = "upload-name";
    label.textContent = known ? t("upload.file_name", { name, size: size(entry.size) }) : name;
    const progress = document.createElement("progress");
    progress.max = entry.size;
    progress.value = offset;
    progress.setAttribute("aria-label", t("upload.progress_label", { name }));
    const sent = document.createElement("span");
    sent.className = "upload-sent";
    sent.textContent = sentText(offset, entry.size);
    const status = document.createElement("span");
    status.className = "upload-status";
    status.setAttribute("role", "status");
    status.textContent = t("upload.interrupted");
    const choose = document.createElement("span");
    choose.className = "upload-buttons";
    const input = document.createElement("input");
    input.type = "file";
    input.className = "file-input";
    input.id = `resume-${entry.urlStorageKey.replace(/[^A-Za-z0-9_-]/g, "_")}`;
    const picker = document.createElement("label");
    picker.className = "button small";
    picker.htmlFor = input.id;
    picker.textContent = t("upload.choose_again", { name });
    const discard = button(t("upload.discard"), t("upload.discard_label", { name }));
    choose.append(input, picker, discard);
    item.append(label, progress, sent, status, choose);
    list.appendChild(item);

    input.addEventListener("change", () => {
      const file = input.files[0];
      input.value = "";
      if (!file) return;
      const metadata = { filename: file.name };
      if (entry.metadata.document_id) metadata.document_id = entry.metadata.document_id;
      // tus-js-client's own lookup: the file's fingerprint must lead to this very upload.
      new tus.Upload(file, options(config, metadata, {})).findPreviousUploads().then((found) => {
        const same = found.find((candidate) => candidate.urlStorageKey === entry.urlStorageKey);
        if (!same) {
          status.textContent = t("upload.not_same_file", { name, size: size(entry.size) });
          return;
        }
        choose.remove();
        item.classList.remove("interrupted");
        run(config, item, status, file, metadata, finished(item, status, name), same);
      });
    });
    discard.addEventListener("click", () => {
      choose.remove();
      item.focus();
      status.textContent = t("upload.cancelling");
      const { headers } = options(config, {}, {});
      tus.Upload.terminate(entry.uploadUrl, { headers, retryDelays: RETRY_DELAYS, onShouldRetry }).then(
        () => {
          urlStorage.removeUpload(entry.urlStorageKey);
          item.classList.add("cancelled");
          progress.remove();
          sent.remove();
          status.textContent = t("upload.cancelled");
        },
        () => {
          item.classList.add("failed");
          status.textContent = t("upload.cancel_failed");
        },
      );
    });
  }

  // Where each stored upload stands (HEAD): gone or refused ones are forgotten, and a
  // finished one too (its document is in the list); the rest are offered.
  async function listUnfinished(config, section, finished) {
    if (!section || !storable) return;
    const list = section.querySelector("[data-unfinished-list]");
    const mine = entries(PREFIX).filter(
      (entry) => entry.uploadUrl && (entry.metadata || {}).document_id === config.documentId,
    );
    for (const entry of mine) {
      let response;
      try {
        response = await fetch(entry.uploadUrl, {
          method: "HEAD",
          headers: { "Tus-Resumable": "1.0.0", "Accept": "application/json" },
          credentials: "same-origin",
        });
      } catch (error) {
        continue; // offline: offered on the next visit
      }
      if ([403, 404, 410].includes(response.status)) {
        urlStorage.removeUpload(entry.urlStorageKey);
        continue;
      }
      if (!response.ok) continue;
      const offset = Number(response.headers.get("Upload-Offset"));
      if (response.headers.get("Medvault-Document-Id") || offset >= entry.size) {
        urlStorage.removeUpload(entry.urlStorageKey);
        continue;
      }
      unfinishedRow(config, list, entry, offset, finished);
      section.hidden = false;
    }
  }

  return {
    // The uploader's resumable settings (its data attributes), or null where it has none.
    configure(uploader) {
      const endpoint = uploader.dataset.resumable;
      if (!endpoint) return null;
      const config = {
        endpoint,
        fromBytes: Number(uploader.dataset.resumableFrom),
        chunkBytes: Number(uploader.dataset.chunkBytes),
        documentId: uploader.dataset.documentId || undefined,
      };
      return {
        wants: (file, metadata) =>
          file.size >= config.fromBytes && fits({ ...metadata, document_id: config.documentId || "" }),
        send: (item, status, file, metadata, outcome) => {
          const fields = { ...metadata };
          if (config.documentId) fields.document_id = config.documentId;
          run(config, item, status, file, fields, outcome, null);
        },
        listUnfinished: (section, finished) => listUnfinished(config, section, finished),
      };
    },
  };
})();
