// The answer form: a warning before leaving with answers not yet saved, and focus kept clear of
// the sticky answer bar. Autosave itself is htmx (hx-post on the form); this only listens.
(function () {
  "use strict";
  const form = document.querySelector("form[data-unsaved-warning]");
  if (!form) return;
  const bar = form.querySelector(".sticky-actions");
  let edits = 0; // every edit counts; a save clears only the edits it carried
  let saved = 0;
  let sentWith = 0;
  let leavingByForm = false;

  form.addEventListener("input", function () { edits += 1; });
  form.addEventListener("submit", function () { leavingByForm = true; });
  form.addEventListener("htmx:beforeRequest", function () { sentWith = edits; });
  form.addEventListener("htmx:afterRequest", function (event) {
    const xhr = event.detail.xhr;
    if (event.detail.successful && xhr && xhr.getResponseHeader("X-Answers-Saved") === "1") {
      saved = Math.max(saved, sentWith);
    }
  });
  window.addEventListener("beforeunload", function (event) {
    if (edits > saved && !leavingByForm) {
      event.preventDefault();
      event.returnValue = ""; // older Chromium needs it set to show the prompt
    }
  });

  // A tall field (an essay) focused near the bottom is scrolled up until the bar no longer
  // covers it; the CSS scroll-padding does the same for small fields.
  form.addEventListener("focusin", function (event) {
    if (!bar || bar.contains(event.target)) return;
    const field = event.target.getBoundingClientRect();
    if (field.bottom > bar.getBoundingClientRect().top) {
      event.target.scrollIntoView({ block: "nearest" });
    }
  });
})();
