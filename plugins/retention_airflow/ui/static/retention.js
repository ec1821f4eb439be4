// Inside the Airflow UI this page runs in a sandboxed iframe that may not navigate the
// top window itself; links to Airflow's own pages are handed to the UI's router instead
// (a history entry plus a popstate event), which shows them without reloading the UI.
"use strict";
document.addEventListener("click", (event) => {
  const link = event.target instanceof Element ? event.target.closest("a[data-airflow]") : null;
  if (!link || event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  let top;
  try {
    top = window.top;
    if (top === window || top.location.origin !== window.location.origin) return;
  } catch {
    return;
  }
  const url = new URL(link.href, window.location.href);
  if (url.origin !== window.location.origin) return;
  event.preventDefault();
  top.history.pushState(null, "", url.pathname + url.search + url.hash);
  top.dispatchEvent(new PopStateEvent("popstate", { state: null }));
});
