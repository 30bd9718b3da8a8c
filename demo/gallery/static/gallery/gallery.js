/*
 * Gallery and detail pages: placeholders of uploads still in progress are
 * replaced by their thumbnails without a reload (AsyncImageSave.watch on each
 * [data-status-url] element; the detail page reloads then, to list the sizes),
 * and the "download all sizes" button asks a worker for a zip, polls its
 * state, then downloads it.
 */
(function () {
  "use strict";

  if (!window.AsyncImageSave || !window.fetch) { return; }

  function setBadge(root, text, state) {
    var badge = root.querySelector("[data-stage]");
    if (!badge) { return; }
    badge.textContent = text;
    badge.className = "badge " + state;
  }

  Array.prototype.forEach.call(document.querySelectorAll("[data-status-url]"), function (root) {
    AsyncImageSave.watch(root.getAttribute("data-status-url"), {
      root: root, // replace the placeholders inside this card only
      onProgress: function (job) { setBadge(root, job.stage, job.state); },
      onDone: function () {
        setBadge(root, "done", "done");
        // The detail page lists the sizes and offers the zip once the image is saved.
        if (root.hasAttribute("data-reload-when-done")) { window.location.reload(); }
      },
      onError: function (job) { setBadge(root, job.error_code || "failed", "failed"); }
    });
  });

  var zipForm = document.getElementById("zip-form");
  if (!zipForm) { return; }
  var zipStatus = document.getElementById("zip-status");
  var zipLink = document.getElementById("zip-link");
  var button = zipForm.querySelector("button");

  function finish(text) {
    zipStatus.textContent = text;
    button.disabled = false;
  }

  zipForm.addEventListener("submit", function (event) {
    event.preventDefault();
    button.disabled = true;
    zipLink.hidden = true;
    zipStatus.textContent = "asking a worker for the zip\u2026";
    fetch(zipForm.action, {
      method: "POST",
      body: new FormData(zipForm), // carries the CSRF token
      credentials: "same-origin",
      headers: { "Accept": "application/json", "X-Requested-With": "XMLHttpRequest" }
    })
      .then(function (response) { return response.json(); })
      .then(function (bundle) {
        if (!bundle.status_url) { throw new Error(bundle.error || "no zip"); }
        // The zip's JSON view has the same state/done/failed shape as a job.
        AsyncImageSave.watch(bundle.status_url, {
          root: null, // nothing to swap
          initialDelay: 200,
          onProgress: function (b) { zipStatus.textContent = "zip: " + b.state + "\u2026"; },
          onDone: function (b) {
            finish("zip ready");
            zipLink.href = b.url;
            zipLink.hidden = false;
            window.location.assign(b.url);
          },
          onError: function (b) { finish("the zip failed: " + (b.error || "unknown error")); }
        });
      })
      .catch(function (error) { finish("could not start the zip: " + error.message); });
  });
})();
