// The admin page's one script (progressive enhancement: every page works without it).
// While a bulk job runs on the failed-watches page, reload it every few seconds so the
// progress line moves; stop once no job runs.
(function () {
  var jobs = document.getElementById("jobs");
  if (!jobs || !jobs.dataset.refresh) return;
  var seconds = Math.max(1, parseInt(jobs.dataset.refresh, 10) || 2);
  setTimeout(function () {
    if (document.activeElement && document.activeElement.tagName === "INPUT") return;
    window.location.reload();
  }, seconds * 1000);
})();
