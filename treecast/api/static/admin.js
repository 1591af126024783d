// The admin page's one script (progressive enhancement: every page works without it).
// While a bulk job runs on the failed-watches page, reload it every few seconds so the
// progress line moves; not while someone is typing into a field, and never once no job runs.
(function () {
  var jobs = document.getElementById("jobs");
  if (!jobs || !jobs.dataset.refresh) return;
  var seconds = Math.max(1, parseInt(jobs.dataset.refresh, 10) || 2);
  function later() {
    setTimeout(function () {
      var active = document.activeElement;
      if (active && (active.tagName === "INPUT" || active.tagName === "SELECT")) return later();
      window.location.reload();
    }, seconds * 1000);
  }
  later();
})();
