// One XHR per file: a real progress bar, a cancel button, and the server's own message.
"use strict";

(function () {
  function humanSize(bytes) {
    if (bytes < 1000) return bytes === 1 ? "1 byte" : `${bytes} bytes`;
    const units = ["KB", "MB", "GB", "TB"];
    let value = bytes;
    for (const unit of units) {
      value /= 1000;
      if (value < 1000 || unit === "TB") return `${value < 100 ? value.toFixed(1) : value.toFixed(0)} ${unit}`;
    }
    return `${bytes} bytes`;
  }

  function csrfToken() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function messageFor(status, problem) {
    if (status === 401) return "Your session has ended. Log in again, then retry.";
    if (problem && problem.detail) return problem.detail;
    if (problem && problem.title) return problem.title;
    return "The upload failed. Check your connection and try again.";
  }

  function setUp(uploader) {
    const endpoint = uploader.dataset.endpoint;
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
        error.textContent = "Choose the patient these files belong to first.";
        patient.setAttribute("aria-invalid", "true");
        patient.setAttribute("aria-describedby", "patient_id-error");
        patient.insertAdjacentElement("afterend", error);
        patient.focus();
        return false;
      }
      if (patient) patient.removeAttribute("aria-invalid");
      return true;
    }

    function upload(file, count) {
      const item = document.createElement("li");
      item.className = "upload-item";
      const name = document.createElement("span");
      name.className = "upload-name";
      name.textContent = `${file.name} (${humanSize(file.size)})`;
      const progress = document.createElement("progress");
      progress.max = 100;
      progress.value = 0;
      progress.setAttribute("aria-label", `Upload progress of ${file.name}`);
      const status = document.createElement("span");
      status.className = "upload-status";
      status.setAttribute("role", "status");
      status.textContent = "Waiting…";
      const cancel = document.createElement("button");
      cancel.type = "button";
      cancel.className = "button small secondary";
      cancel.textContent = "Cancel";
      cancel.setAttribute("aria-label", `Cancel upload of ${file.name}`);
      item.append(name, progress, status, cancel);
      list.appendChild(item);

      if (file.size > maxBytes) {
        item.classList.add("failed");
        progress.remove();
        cancel.remove();
        status.textContent = `This file is ${humanSize(file.size)}; the limit is ${humanSize(maxBytes)}.`;
        return;
      }

      const form = new FormData();
      if (fields) {
        for (const [key, value] of new FormData(fields).entries()) {
          if (key === "title" && count > 1) continue; // one title cannot name several files
          if (value !== "") form.append(key, value);
        }
      }
      form.append("filename", file.name);
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
          item.classList.add("done");
          progress.value = 100;
          status.textContent = "Stored. ";
          const link = document.createElement("a");
          link.href = body.url;
          link.textContent = `Open ${body.title || file.name}`;
          status.appendChild(link);
          if (single) setTimeout(() => window.location.reload(), 800);
          return;
        }
        item.classList.add("failed");
        progress.remove();
        status.textContent = messageFor(xhr.status, body);
        if (body && body.existing_document_id) {
          status.textContent = "This file is already stored for this patient. ";
          const link = document.createElement("a");
          link.href = `/documents/${body.existing_document_id}`;
          link.textContent = "Open the existing document";
          status.appendChild(link);
        }
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
        status.textContent = "Cancelled. Nothing was stored.";
      });
      cancel.addEventListener("click", () => xhr.abort());
      status.textContent = "Uploading…";
      xhr.send(form);
    }

    function start(files) {
      if (!files.length || !fieldsReady()) return;
      const chosen = single ? [files[0]] : Array.from(files);
      chosen.forEach((file) => upload(file, chosen.length));
    }

    input.addEventListener("change", () => {
      start(input.files);
      input.value = "";
    });
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
