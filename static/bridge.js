// Copy buttons: <button data-copy="#input-id">. No inline scripts anywhere.
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const field = document.querySelector(button.dataset.copy);
  if (!field) return;
  field.select();
  const done = () => { button.textContent = "Copied"; setTimeout(() => { button.textContent = "Copy"; }, 1500); };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(field.value).then(done, () => { document.execCommand("copy"); done(); });
  } else {
    document.execCommand("copy");
    done();
  }
});

// "Add a row" buttons: <button data-add-row="#template" data-into="#tbody"> copy a <template>.
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-add-row]");
  if (!button) return;
  const template = document.querySelector(button.dataset.addRow);
  const target = document.querySelector(button.dataset.into);
  if (!template || !target) return;
  const row = template.content.firstElementChild.cloneNode(true);
  target.appendChild(row);
  const first = row.querySelector("input, select");
  if (first) first.focus();
});

// "Remove" buttons: <button data-remove-row> take their table row away. (Not
// hx-on: the Content-Security-Policy forbids the eval it needs.)
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-remove-row]");
  if (button) button.closest("tr").remove();
});

// An HTMX request that failed: show the server's error (an escaped fragment) or a
// plain sentence, at the top of the page, instead of silently doing nothing.
function showRequestError(html) {
  const slot = document.querySelector("[data-request-errors]");
  if (!slot) return;
  slot.innerHTML = html;
  slot.scrollIntoView({ block: "nearest" });
}
document.addEventListener("htmx:responseError", (event) => {
  const text = event.detail.xhr.responseText || "";
  showRequestError(text.trim().startsWith("<p") ? text
    : "<p class=\"flash error\" role=\"alert\">The request failed (HTTP " + event.detail.xhr.status + "). Reload the page and try again.</p>");
});
document.addEventListener("htmx:sendError", () => {
  showRequestError("<p class=\"flash error\" role=\"alert\">The bridge did not answer. Is it running?</p>");
});
document.addEventListener("htmx:beforeRequest", () => {
  const slot = document.querySelector("[data-request-errors]");
  if (slot) slot.innerHTML = "";
});
