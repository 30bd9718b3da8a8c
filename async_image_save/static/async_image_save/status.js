/*
 * async_image_save status helper: polls the job status endpoint and swaps
 * placeholders for thumbnails. No framework, no build step.
 *
 *   AsyncImageSave.watch(jobUrl, {
 *     onProgress: function (job) {},   // every poll: job.state, job.stage
 *     onDone: function (job) {},       // job.thumbnails[spec].url/width/height
 *     onError: function (job) {},      // job.error_code, job.error
 *     initialDelay: 300, maxDelay: 5000, factor: 1.5, timeout: 600000
 *   });
 *   AsyncImageSave.swapPlaceholders(root, job)
 *   AsyncImageSave.autoWatch()  // runs on load: watches every job named by a
 *                               // data-async-image-status-url on the page
 *
 * Placeholders are swapped when the job is done: every
 * <img data-async-image-job="JOB ID" data-async-image-spec="small"> on the page,
 * plus, when options.root is given, those inside it without a job id.
 */
(function (global) {
  "use strict";

  function swapPlaceholders(root, job) {
    var mine = document.querySelectorAll('img[data-async-image-job="' + job.id + '"]');
    var inRoot = root ? root.querySelectorAll("img[data-async-image-spec]:not([data-async-image-job])") : [];
    var imgs = Array.prototype.slice.call(mine).concat(Array.prototype.slice.call(inRoot));
    imgs.forEach(function (img) {
      var thumb = job.thumbnails && job.thumbnails[img.getAttribute("data-async-image-spec")];
      if (!thumb) { return; }
      img.src = thumb.url;
      img.width = thumb.width;
      img.height = thumb.height;
      img.classList.remove("async-image-pending");
      img.removeAttribute("aria-busy");
    });
  }

  function watch(url, options) {
    options = options || {};
    var delay = options.initialDelay || 300;
    var maxDelay = options.maxDelay || 5000;
    var factor = options.factor || 1.5;
    var deadline = Date.now() + (options.timeout || 600000);
    var stopped = false;

    function call(name, job) {
      if (typeof options[name] === "function") { options[name](job); }
    }

    function poll() {
      if (stopped) { return; }
      fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (response) {
          if (!response.ok) { throw new Error("status " + response.status); }
          return response.json();
        })
        .then(function (job) {
          call("onProgress", job);
          if (job.state === "done") {
            swapPlaceholders(options.root || null, job);
            call("onDone", job);
          } else if (job.state === "failed") {
            call("onError", job);
          } else {
            schedule();
          }
        })
        .catch(function () { schedule(); });
    }

    function schedule() {
      if (Date.now() > deadline) {
        call("onError", { state: "unknown", error_code: "timeout", error: "Gave up polling." });
        return;
      }
      setTimeout(poll, delay);
      delay = Math.min(maxDelay, Math.round(delay * factor));
    }

    poll();
    return { stop: function () { stopped = true; } };
  }

  function autoWatch(root) {
    var seen = {};
    var imgs = (root || document).querySelectorAll("img[data-async-image-status-url]");
    Array.prototype.forEach.call(imgs, function (img) {
      var url = img.getAttribute("data-async-image-status-url");
      if (seen[url]) { return; }
      seen[url] = watch(url, {});
    });
    return seen;
  }

  global.AsyncImageSave = { watch: watch, swapPlaceholders: swapPlaceholders, autoWatch: autoWatch };
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { autoWatch(); });
  } else {
    autoWatch();
  }
})(window);
