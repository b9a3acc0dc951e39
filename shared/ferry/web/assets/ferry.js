// Ferry's web view: times in the viewer's zone (UTC stays on hover), and nothing else.
// Live parts refresh with htmx (htmx.min.js, 2.0.11, vendored): hx-trigger="every Ns [ferryVisible()]"
// polls only while the tab is visible.
function ferryVisible() { return document.visibilityState === "visible"; }
(function () {
  var styles = { time: { dateStyle: "medium", timeStyle: "medium" }, datetime: { dateStyle: "medium", timeStyle: "short" } };
  function localize(root) {
    (root.querySelectorAll ? root : document).querySelectorAll("time[data-format]").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (isNaN(d.getTime())) return;
      el.textContent = d.toLocaleString(undefined, styles[el.dataset.format] || styles.datetime);
      el.dataset.localized = "1";
    });
  }
  document.addEventListener("DOMContentLoaded", function () { localize(document); });
  document.addEventListener("htmx:afterSettle", function (e) { localize(e.target); });
})();
