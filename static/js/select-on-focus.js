// Fields marked data-select-on-focus (a new token, a signing secret) select their whole value
// when focused, ready to copy. A file of its own: the Content-Security-Policy allows no inline
// script or event handler attribute.
document.addEventListener("focusin", (event) => {
  const field = event.target;
  if (field instanceof HTMLInputElement && field.hasAttribute("data-select-on-focus")) {
    field.select();
  }
});
