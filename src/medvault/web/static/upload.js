// One request per file, with a real progress bar, a cancel button and the server's own
// message; large files go resumable instead (resumable.js: tus, pause and resume).
"use strict";

(function () {
  // portal.js (loaded first) reads the page's translated words.
  const { t, tn } = window.portalText;
  const humanSize = window.portalText.size;
  const resumable = window.portalResumable;

  function csrfToken() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function messageFor(status, problem) {
    if (status === 401) return t("upload.session_ended");
    if (problem && problem.detail) return problem.detail;
    if (problem && problem.title) return problem.title;
    return t("upload.failed");
  }

  // What a finished upload looks like, however it was sent.
  function showStored(item, status, url, title) {
    item.classList.add("done");
    status.textContent = t("upload.stored");
    const link = document.createElement("a");
    link.href = url;
    link.textContent = t("upload.open", { title });
    status.appendChild(link);
  }

  function showRefused(item, status, httpStatus, body) {
    item.classList.add("failed");
    status.textContent = messageFor(httpStatus, body);
    if (body && body.existing_document_id) {
      status.textContent = t("upload.duplicate");
      const link = document.createElement("a");
      link.href = `/documents/${body.existing_document_id}`;
      link.textContent = t("upload.open_existing");
      status.appendChild(link);
    }
  }

  function setUp(uploader) {
    const endpoint = uploader.dataset.endpoint;
    // Large files go resumable (tus) where the page offers it and the browser can.
    const large = resumable ? resumable.configure(uploader) : null;
    const maxBytes = Number(uploader.dataset.maxBytes);
    const single = uploader.hasAttribute("data-single");
    const fields = uploader.querySelector("[data-upload-fields]");
    const input = uploader.querySelector("[data-file-input]");
    const list = uploader.querySelector("[data-upload-list]");
    const dropzone = uploader.querySelector("[data-dropzone]");

    function fieldsReady() {
      if (!fields) return true;
      const patient = fields.querySelector("select[name=patient_id]");
      const existing = fields.querySelector(".error[data-for=patient_id]");
      if (existing) existing.remove();
      if (patient && !patient.value) {
        const error = document.createElement("p");
        error.className = "error";
        error.dataset.for = "patient_id";
        error.id = "patient_id-error";
        error.textContent = t("upload.patient_first");
        patient.setAttribute("aria-invalid", "true");
        patient.setAttribute("aria-describedby", "patient_id-error");
        patient.insertAdjacentElement("afterend", error);
        patient.focus();
        return false;
      }
      if (patient) patient.removeAttribute("aria-invalid");
      return true;
    }

    const template = uploader.querySelector("template[data-file-fields]");
    const actions = uploader.querySelector("[data-upload-actions]");
    const startButton = uploader.querySelector("[data-upload-start]");
    const defaultType = uploader.querySelector("[data-default-type]");
    // Files chosen but not sent yet, each with its own type and title fields.
    const pending = new Map();
    let counter = 0;

    function stem(name) {
      const dot = name.lastIndexOf(".");
      return dot > 0 ? name.slice(0, dot) : name;
    }

    function refreshActions() {
      if (!actions) return;
      actions.hidden = pending.size === 0;
      startButton.textContent = tn("upload.start", pending.size);
    }

    function newItem(file) {
      counter += 1;
      const item = document.createElement("li");
      item.className = "upload-item";
      const name = document.createElement("span");
      name.className = "upload-name";
      name.id = `upload-${counter}-name`;
      name.textContent = t("upload.file_name", { name: file.name, size: humanSize(file.size) });
      const status = document.createElement("span");
      status.className = "upload-status";
      status.setAttribute("role", "status");
      item.append(name, status);
      list.appendChild(item);
      return { item, name, status };
    }

    function fieldError(field, message) {
      const error = document.createElement("p");
      error.className = "error";
      error.id = `${field.id}-error`;
      error.textContent = message;
      field.setAttribute("aria-invalid", "true");
      field.setAttribute("aria-describedby", `${field.dataset.describedBy} ${error.id}`);
      field.insertAdjacentElement("afterend", error);
    }

    function clearError(field) {
      const error = document.getElementById(`${field.id}-error`);
      if (error) error.remove();
      field.removeAttribute("aria-invalid");
      field.setAttribute("aria-describedby", field.dataset.describedBy);
    }

    // A chosen file waits in the list with its own type and title until Upload.
    function stage(file) {
      const { item, name, status } = newItem(file);
      if (file.size > maxBytes) {
        item.classList.add("failed");
        status.textContent = t("upload.too_large", { size: humanSize(file.size), limit: humanSize(maxBytes) });
        return;
      }
      if (single || !template) {
        send(item, status, file, {});
        return;
      }
      const fields = template.content.firstElementChild.cloneNode(true);
      const type = fields.querySelector('[data-field="document_type"]');
      const title = fields.querySelector('[data-field="title"]');
      for (const [field, key] of [[type, "type"], [title, "title"]]) {
        field.id = `upload-${counter}-${key}`;
        field.dataset.describedBy = name.id;
        field.setAttribute("aria-describedby", name.id);
        fields.querySelector(`label[data-for="${key}"]`).htmlFor = field.id;
      }
      if (defaultType) type.value = defaultType.value;
      title.value = stem(file.name).slice(0, 500);
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "button small secondary";
      remove.textContent = t("upload.remove");
      remove.setAttribute("aria-label", t("upload.remove_label", { name: file.name }));
      remove.addEventListener("click", () => {
        pending.delete(item);
        item.remove();
        refreshActions();
        (pending.size ? startButton : input).focus();
      });
      name.insertAdjacentElement("afterend", remove);
      item.insertBefore(fields, status);
      status.textContent = t("upload.ready");
      pending.set(item, { file, type, title, remove, status });
      refreshActions();
    }

    function startAll() {
      if (!fieldsReady()) return;
      let firstInvalid = null;
      for (const row of pending.values()) {
        clearError(row.type);
        clearError(row.title);
        if (!row.type.value) {
          fieldError(row.type, t("upload.choose_type"));
          firstInvalid = firstInvalid || row.type;
        }
        if (!row.title.value.trim()) {
          fieldError(row.title, t("upload.give_title"));
          firstInvalid = firstInvalid || row.title;
        }
      }
      if (firstInvalid) {
        firstInvalid.focus();
        return;
      }
      const rows = Array.from(pending.entries());
      pending.clear();
      refreshActions();
      for (const [item, row] of rows) {
        row.type.disabled = true;
        row.title.disabled = true;
        row.remove.remove();
        send(item, row.status, row.file, { document_type: row.type.value, title: row.title.value.trim() });
      }
      // The button is gone: keep the keyboard where the uploads are reported.
      list.focus();
    }

    // The document's fields: the shared ones of the form above, then this file's own.
    function fieldsOf(file, extra) {
      const values = {};
      if (fields) {
        for (const [key, value] of new FormData(fields).entries()) {
          if (value !== "") values[key] = value;
        }
      }
      return { ...values, ...extra, filename: file.name };
    }

    function finished(item, status, title) {
      return {
        stored: (documentId) => {
          showStored(item, status, `/documents/${documentId}`, title);
          if (single) setTimeout(() => window.location.reload(), 800);
        },
        refused: (httpStatus, body) => showRefused(item, status, httpStatus, body),
      };
    }

    function send(item, status, file, extra) {
      const metadata = fieldsOf(file, extra);
      if (large && large.wants(file, metadata)) {
        large.send(item, status, file, metadata, finished(item, status, metadata.title || file.name));
        return;
      }
      const progress = document.createElement("progress");
      progress.max = 100;
      progress.value = 0;
      progress.setAttribute("aria-label", t("upload.progress_label", { name: file.name }));
      const cancel = document.createElement("button");
      cancel.type = "button";
      cancel.className = "button small secondary";
      cancel.textContent = t("upload.cancel");
      cancel.setAttribute("aria-label", t("upload.cancel_label", { name: file.name }));
      item.insertBefore(progress, status);
      item.append(cancel);

      const form = new FormData();
      for (const [key, value] of Object.entries(metadata)) form.append(key, value);
      form.append("file", file, file.name);
      const xhr = new XMLHttpRequest();
      xhr.open("POST", endpoint);
      xhr.setRequestHeader("X-CSRF-Token", csrfToken());
      xhr.setRequestHeader("Accept", "application/json");
      xhr.responseType = "json";
      xhr.upload.addEventListener("progress", (event) => {
        if (!event.lengthComputable) return;
        const percent = Math.round((event.loaded / event.total) * 100);
        progress.value = percent;
        status.textContent = `${percent}%`;
      });
      xhr.addEventListener("load", () => {
        cancel.remove();
        const body = xhr.response || {};
        if (xhr.status === 201) {
          progress.value = 100;
          showStored(item, status, body.url, body.title || file.name);
          window.portalSession.seen();
          if (single) setTimeout(() => window.location.reload(), 800);
          return;
        }
        progress.remove();
        showRefused(item, status, xhr.status, body);
      });
      xhr.addEventListener("error", () => {
        cancel.remove();
        item.classList.add("failed");
        status.textContent = messageFor(0, null);
      });
      xhr.addEventListener("abort", () => {
        item.classList.add("cancelled");
        progress.remove();
        cancel.remove();
        status.textContent = t("upload.cancelled");
      });
      cancel.addEventListener("click", () => xhr.abort());
      status.textContent = t("upload.uploading");
      xhr.send(form);
    }

    function start(files) {
      if (!files.length || (single && !fieldsReady())) return;
      const chosen = single ? [files[0]] : Array.from(files);
      chosen.forEach(stage);
    }

    if (startButton) startButton.addEventListener("click", startAll);
    // Resumable uploads this browser started here and did not finish (a reload, a crash).
    if (large) large.listUnfinished(uploader.querySelector("[data-unfinished]"), finished);

    input.addEventListener("change", () => {
      start(input.files);
      input.value = "";
    });
    // Files chosen before this script ran (a quick hand, a slow device: the deferred
    // scripts run after the page shows) fired their change event unheard: take them now.
    if (input.files && input.files.length) {
      start(input.files);
      input.value = "";
    }
    if (dropzone) {
      ["dragenter", "dragover"].forEach((type) =>
        dropzone.addEventListener(type, (event) => {
          event.preventDefault();
          dropzone.classList.add("active");
        }),
      );
      ["dragleave", "drop"].forEach((type) =>
        dropzone.addEventListener(type, () => dropzone.classList.remove("active")),
      );
      dropzone.addEventListener("drop", (event) => {
        event.preventDefault();
        start(event.dataTransfer.files);
      });
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("[data-uploader]").forEach(setUp);
  });
})();
