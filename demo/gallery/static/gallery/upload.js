/*
 * The upload page: drop (or choose) several images; each is posted on its own
 * with XMLHttpRequest, up to three at a time, so each gets its own upload
 * progress bar. The answer names the job and its status URL (which carries the
 * job's token, so polling does not depend on the session); the row's
 * placeholder is tagged with the job id and AsyncImageSave.watch() polls the
 * status, the row showing the stages (queued, saving, thumbnails, done) until
 * the placeholder is replaced by the small thumbnail. Without JavaScript the
 * form posts as usual.
 */
(function () {
  "use strict";

  var form = document.getElementById("upload-form");
  if (!form || !window.FormData || !window.XMLHttpRequest || !window.AsyncImageSave) { return; }

  var zone = document.getElementById("dropzone");
  var input = form.querySelector("input[type=file]");
  var titleInput = form.querySelector("input[name=title]");
  var list = document.getElementById("uploads");
  var csrfToken = form.querySelector("input[name=csrfmiddlewaretoken]").value;
  var placeholderUrl = form.getAttribute("data-placeholder-url");
  var STAGES = ["uploading", "queued", "saving", "thumbnails", "done"];

  form.classList.add("enhanced");

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text) { node.textContent = text; }
    return node;
  }

  function makeRow(file) {
    var row = { el: el("li", "upload-row") };
    row.img = el("img", "thumb async-image-pending");
    row.img.src = placeholderUrl;
    row.img.width = 120;
    row.img.height = 120;
    row.img.alt = "";
    row.img.setAttribute("data-async-image-spec", "small");
    var info = el("div", "info");
    row.name = el("a", "name", file.name);
    row.bar = el("progress");
    row.bar.max = 100;
    row.bar.value = 0;
    row.stages = el("ol", "stages");
    STAGES.forEach(function (name) {
      var item = el("li", "", name);
      item.setAttribute("data-stage", name);
      row.stages.appendChild(item);
    });
    row.message = el("p", "message");
    info.appendChild(row.name);
    info.appendChild(row.bar);
    info.appendChild(row.stages);
    info.appendChild(row.message);
    row.el.appendChild(row.img);
    row.el.appendChild(info);
    list.appendChild(row.el);
    return row;
  }

  function setStage(row, stage) {
    var reached = STAGES.indexOf(stage);
    Array.prototype.forEach.call(row.stages.children, function (item, index) {
      item.classList.toggle("passed", index < reached || stage === "done");
      item.classList.toggle("current", index === reached && stage !== "done");
    });
    row.el.setAttribute("data-state", stage);
  }

  function fail(row, text) {
    // The stage it failed at turns red; the spinning placeholder goes.
    var current = row.stages.querySelector(".current");
    if (current) { current.className = "failed"; }
    if (row.img.parentNode) {
      var mark = el("span", "thumb broken", "\u2715");
      mark.setAttribute("aria-hidden", "true");
      row.img.parentNode.replaceChild(mark, row.img);
    }
    row.el.setAttribute("data-state", "failed");
    row.el.classList.add("failed");
    row.message.textContent = text;
  }

  function errorText(body, status) {
    if (body && body.errors) {
      var lines = [];
      Object.keys(body.errors).forEach(function (field) {
        body.errors[field].forEach(function (error) { lines.push(error.message); });
      });
      return lines.join(" ");
    }
    return "The upload failed (HTTP " + status + ").";
  }

  function watch(row, answer) {
    row.name.href = answer.photo_url;
    // status.js swaps the images tagged with the job's id (and those in root).
    row.img.setAttribute("data-async-image-job", answer.job);
    row.el.setAttribute("data-job", answer.job);
    AsyncImageSave.watch(answer.status_url, {
      root: row.el, // only this row's placeholder is replaced
      onProgress: function (job) {
        if (job.state !== "failed") { setStage(row, job.stage); } // fail() marks where it stopped
      },
      onDone: function (job) {
        setStage(row, "done");
        var sizes = Object.keys(job.thumbnails || {}).map(function (spec) {
          var t = job.thumbnails[spec];
          return spec + " " + t.width + "\u00d7" + t.height;
        });
        row.message.textContent = "Saved" + (sizes.length ? ": " + sizes.join(", ") : "") + ".";
      },
      onError: function (job) {
        fail(row, (job.error_code ? job.error_code + ": " : "") + (job.error || "failed"));
      }
    });
  }

  // Up to PARALLEL files go up at once; the others wait their turn.
  var PARALLEL = 3;
  var waiting = [];
  var running = 0;

  function pump() {
    while (running < PARALLEL && waiting.length) {
      var next = waiting.shift();
      running += 1;
      send(next.file, next.row, function () {
        running -= 1;
        pump();
      });
    }
  }

  function send(file, row, finished) {
    setStage(row, "uploading");
    row.message.textContent = "Uploading 0%";
    var data = new FormData();
    data.append("image", file, file.name);
    if (titleInput && titleInput.value) { data.append("title", titleInput.value); }
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.setRequestHeader("X-CSRFToken", csrfToken);
    xhr.setRequestHeader("X-Requested-With", "XMLHttpRequest");
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.onprogress = function (event) {
      if (event.lengthComputable) {
        row.bar.value = Math.round((event.loaded / event.total) * 100);
        row.message.textContent = "Uploading " + row.bar.value + "%";
      }
    };
    xhr.onloadend = finished;
    xhr.onload = function () {
      var body = null;
      try { body = JSON.parse(xhr.responseText); } catch (e) { body = null; }
      if (xhr.status >= 200 && xhr.status < 300 && body && body.status_url) {
        row.bar.value = 100;
        row.message.textContent = "Uploaded; waiting for the worker.";
        setStage(row, "queued");
        watch(row, body);
      } else {
        fail(row, errorText(body, xhr.status));
      }
    };
    xhr.onerror = function () { fail(row, "Network error while uploading."); };
    xhr.send(data);
  }

  function sendAll(files) {
    Array.prototype.forEach.call(files || [], function (file) {
      var row = makeRow(file);
      row.el.setAttribute("data-state", "waiting");
      row.message.textContent = "Waiting for a free upload slot.";
      waiting.push({ file: file, row: row });
    });
    pump();
  }

  input.addEventListener("change", function () {
    sendAll(input.files);
    input.value = "";
  });
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    sendAll(input.files);
    input.value = "";
  });

  ["dragenter", "dragover"].forEach(function (name) {
    zone.addEventListener(name, function (event) {
      event.preventDefault();
      zone.classList.add("over");
    });
  });
  ["dragleave", "drop"].forEach(function (name) {
    zone.addEventListener(name, function (event) {
      event.preventDefault();
      zone.classList.remove("over");
    });
  });
  // A file dropped beside the zone must not make the browser leave the page.
  ["dragover", "drop"].forEach(function (name) {
    document.addEventListener(name, function (event) { event.preventDefault(); });
  });
  zone.addEventListener("drop", function (event) {
    sendAll(event.dataTransfer && event.dataTransfer.files);
  });
})();
