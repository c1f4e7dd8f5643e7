// Progressive enhancement only: every page works without this file, except the copy buttons
// and the delete dialog (without it, "Delete" opens a confirmation page instead).
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.hidden = false;
  }
});

document.addEventListener("click", (event) => {
  const target = event.target instanceof Element ? event.target : null;
  if (!target) return;

  const copy = target.closest("button[data-copy]");
  if (copy) {
    const source = document.getElementById(copy.dataset.copy);
    const status = copy.parentElement.querySelector(".copy-status");
    const text = source.tagName === "UL"
      ? Array.from(source.querySelectorAll("li")).map((li) => li.textContent.trim()).join("\n")
      : source.textContent.trim();
    navigator.clipboard.writeText(text).then(
      () => { if (status) status.textContent = "Copied."; },
      () => {
        // No clipboard access: select the text so the user can copy it by hand.
        const range = document.createRange();
        range.selectNodeContents(source);
        const selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
        if (status) status.textContent = "Press Ctrl+C (or ⌘C) to copy.";
      });
    return;
  }

  const del = target.closest("button[data-delete-key]");
  const dialog = document.getElementById("delete-dialog");
  if (del && dialog && typeof dialog.showModal === "function") {
    event.preventDefault();
    const keyId = del.dataset.deleteKey;
    document.getElementById("delete-form").action = "/keys/" + encodeURIComponent(keyId) + "/delete";
    document.getElementById("delete-key-name").textContent = "\u201c" + del.dataset.keyName + "\u201d";
    document.getElementById("delete-key-id").textContent = keyId;
    dialog.showModal();
    return;
  }

  if (target.closest("[data-close-dialog]")) {
    const open = target.closest("dialog");
    if (open) open.close();
  }
});
