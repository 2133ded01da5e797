// Live updates: listen to the page's event stream and swap in a fresh server-rendered
// fragment after each change. Without JavaScript the pages still work (reload them).
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !window.EventSource) return;
  var indicator = document.querySelector("[data-live-indicator]");
  var pending = null;

  function refresh() {
    if (pending) return;
    pending = fetch(live.dataset.fragment, { headers: { "Accept": "text/html" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (html !== null && !live.contains(document.activeElement)) live.innerHTML = html;
        live.dataset.refreshed = String(Date.now());
      })
      .catch(function () {})
      .finally(function () { pending = null; });
  }

  if (live.hasAttribute("data-finished")) return;
  var source = new EventSource(live.dataset.events);
  source.onopen = function () { if (indicator) indicator.classList.add("on"); };
  source.onerror = function () { if (indicator) indicator.classList.remove("on"); };
  source.addEventListener("change", refresh);
  source.addEventListener("end", function () {
    source.close();
    if (indicator) indicator.classList.remove("on");
    refresh();
  });
})();
