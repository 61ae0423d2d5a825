// contactsync console: keyboard shortcuts for the review queue. Served by the
// agent itself (no inline script: the Content-Security-Policy forbids it).
// a = accept, r = reject, j = next, k = previous, u = undo the last decision.
// A two-way conflict has no accept/reject forms: a and r do nothing there.
(function () {
  "use strict";
  function typing(target) {
    var tag = target && target.tagName;
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || (target && target.isContentEditable);
  }
  function submit(id) {
    var form = document.getElementById(id);
    if (form) { form.submit(); return true; }
    return false;
  }
  function follow(id) {
    var link = document.getElementById(id);
    if (link) { window.location.assign(link.href); return true; }
    return false;
  }
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) { return; }
    if (!document.getElementById("compare") && !document.getElementById("conflict") &&
        event.key !== "u") { return; }
    var done = false;
    switch (event.key) {
      case "a": done = submit("accept-form"); break;
      case "r": done = submit("reject-form"); break;
      case "j": done = follow("next"); break;
      case "k": done = follow("prev"); break;
      case "u": done = submit("undo-form"); break;
    }
    if (done) { event.preventDefault(); }
  });
  // Keys work from here on (a test waits for this before it types).
  document.documentElement.setAttribute("data-keys", "ready");
  // Bulk accept asks once more in the browser too (the server checks the count).
  var bulk = document.getElementById("bulk-form");
  if (bulk) {
    bulk.addEventListener("submit", function (event) {
      var n = bulk.querySelector("input[name=count]").value;
      if (!window.confirm("Accept " + n + " review item(s)?")) { event.preventDefault(); }
    });
  }
})();
