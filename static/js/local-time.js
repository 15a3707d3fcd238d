// Times in the viewer's own time zone and locale. The server writes every moment as
// <time datetime="...Z">1 Dec 2026, 14:03 UTC</time>; this rewrites the text, keeps the exact
// moment on hover (title), and keeps relative times ("3 min ago") fresh.
//   data-time="relative": "3 min ago" / "in 5 min"; "clock": the time of day (with the date
//   when not today); anything else: date and time.
(function () {
  "use strict";
  const exact = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "long" });
  const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  const timeOnly = new Intl.DateTimeFormat(undefined, { timeStyle: "medium" });
  const dateAndClock = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
  const words = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
  const UNITS = [["day", 86400], ["hour", 3600], ["minute", 60], ["second", 1]];

  function relative(moment, now) {
    const seconds = (moment - now) / 1000;
    if (Math.abs(seconds) < 10) return seconds > 0 ? "in a moment" : "just now";
    if (Math.abs(seconds) > 30 * 86400) return dateTime.format(moment);
    for (const [unit, size] of UNITS) {
      if (Math.abs(seconds) >= size) return words.format(Math.round(seconds / size), unit);
    }
    return words.format(0, "second");
  }

  function sameDay(a, b) {
    return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();
  }

  function localise(root) {
    const now = new Date();
    (root || document).querySelectorAll("time[datetime]").forEach(function (element) {
      const value = element.getAttribute("datetime");
      if (!value.includes("T")) return; // a date alone has no zone to convert
      const moment = new Date(value);
      if (isNaN(moment)) return;
      const style = element.dataset.time;
      if (style === "relative") element.textContent = relative(moment, now);
      else if (style === "clock") element.textContent = sameDay(moment, now) ? timeOnly.format(moment) : dateAndClock.format(moment);
      else element.textContent = dateTime.format(moment);
      element.title = exact.format(moment);
      element.dataset.localised = "1";
    });
  }

  // A datetime-local field the server reads as UTC (data-utc): people type their own time, and
  // it is converted to UTC just before the form is sent.
  function pad(n) { return String(n).padStart(2, "0"); }
  function utcFields() {
    document.querySelectorAll("input[type=datetime-local][data-utc]").forEach(function (input) {
      const label = input.labels && input.labels[0];
      if (label) label.textContent = label.textContent.replace("(UTC)", "(your time)");
      input.form.addEventListener("submit", function () {
        if (!input.value) return;
        const local = new Date(input.value);
        if (isNaN(local)) return;
        input.value = local.getUTCFullYear() + "-" + pad(local.getUTCMonth() + 1) + "-" + pad(local.getUTCDate()) +
          "T" + pad(local.getUTCHours()) + ":" + pad(local.getUTCMinutes());
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () { localise(document); utcFields(); });
  document.addEventListener("htmx:load", function (event) { localise(event.target); });
  window.setInterval(function () { localise(document); }, 30000);
})();
