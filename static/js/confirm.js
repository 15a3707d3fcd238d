// Forms that guard what they change. Destructive actions ask first: a form (or its submit
// button) with data-confirm="question" submits only when the person answers OK; without
// JavaScript the form submits as before. Below: a read-only secret selects itself on focus.
(function () {
  "use strict";
  document.addEventListener("submit", function (event) {
    const form = event.target;
    const button = event.submitter;
    const question = (button && button.dataset.confirm) || form.dataset.confirm;
    if (question && !window.confirm(question)) {
      event.preventDefault();
      event.stopImmediatePropagation();
    }
  }, true);
})();

// A read-only secret selects itself when focused, ready to copy.
document.addEventListener("focusin", function (event) {
  if (event.target.matches && event.target.matches("input[data-select-on-focus]")) event.target.select();
});
