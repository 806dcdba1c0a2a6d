// quench console: live refresh, the only script the console has.
// The server says when its records, its approval queue or its kill switch
// change (server-sent events on /events); a page marked live reloads then,
// unless someone is typing in one of its forms: then it says so and waits.
// Without this script every page still works; it just does not refresh.
(function () {
  "use strict";
  var body = document.body;
  if (!window.EventSource || !body || body.getAttribute("data-live") !== "yes") {
    return;
  }
  var note = document.getElementById("live");
  var source = new EventSource("/events");
  function busy() {
    var a = document.activeElement;
    if (!a) { return false; }
    var tag = a.tagName;
    return (tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT") && a.value !== "";
  }
  source.addEventListener("change", function () {
    if (busy()) {
      if (note) { note.hidden = false; }
      return;
    }
    source.close();
    window.location.reload();
  });
})();
