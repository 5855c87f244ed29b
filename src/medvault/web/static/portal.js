// Small progressive enhancements; every page also works without this script.
"use strict";

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.getAttribute("content") : "";
}

document.addEventListener("DOMContentLoaded", () => {
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
      status.textContent = "Creating a link…";
      try {
        const response = await fetch(form.action, {
          method: "POST",
          headers: { "Accept": "application/json", "X-CSRF-Token": csrfToken() },
          body: new URLSearchParams(new FormData(form)),
          credentials: "same-origin",
        });
        const body = await response.json();
        if (!response.ok) {
          status.textContent = body.detail || body.title || "The link could not be created.";
          return;
        }
        const expires = new Date(body.expires_at).toLocaleString();
        try {
          await navigator.clipboard.writeText(body.url);
          status.textContent = `Link copied. It works until ${expires}.`;
        } catch (error) {
          status.textContent = `Copy this link (it works until ${expires}): `;
          const input = document.createElement("input");
          input.readOnly = true;
          input.value = body.url;
          input.setAttribute("aria-label", "Download link");
          status.appendChild(input);
          input.select();
        }
        status.dataset.url = body.url;
      } catch (error) {
        status.textContent = "The link could not be created. Check your connection.";
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
