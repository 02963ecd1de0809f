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
  htmx.process(row);  // the row's Remove button uses hx-on
  const first = row.querySelector("input, select");
  if (first) first.focus();
});
