/*
 * stateservice dashboard: live updates and confirmations.
 * SPDX-License-Identifier: MIT (the stateservice project's licence, as pyproject.toml declares it).
 *
 * Hand-written, no build step, no dependencies. Without it the pages still work: they show the state
 * as it was when loaded, and every button asks for confirmation on a page of its own.
 */
(function () {
  "use strict";

  var live = document.getElementById("live");
  var statusLine = document.getElementById("live-status");

  function say(text, state) {
    if (statusLine) {
      statusLine.textContent = "Live updates: " + text;
      statusLine.setAttribute("data-live", state);
    }
  }

  // Swap in the #live part of the page as the server renders it now: one template, no rendering in here.
  var fetching = false;
  var again = false;
  function refresh() {
    var typing = document.activeElement;
    if (typing && live.contains(typing) && /^(INPUT|TEXTAREA|SELECT)$/.test(typing.tagName)) {
      // someone is writing in a field of the live part: swap it once they leave the field
      typing.addEventListener("blur", refresh, { once: true });
      return;
    }
    if (fetching) {
      again = true;
      return;
    }
    fetching = true;
    fetch(window.location.href, { headers: { Accept: "text/html" }, credentials: "same-origin" })
      .then(function (response) {
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (html === null) {
          return;
        }
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("live");
        if (fresh) {
          live.innerHTML = fresh.innerHTML;
          live.setAttribute("data-version", fresh.getAttribute("data-version") || "");
          tick();
        }
      })
      .catch(function () {})
      .then(function () {
        fetching = false;
        if (again) {
          again = false;
          refresh();
        }
      });
  }

  // EventSource reconnects by itself after a dropped stream, but gives up for good (readyState CLOSED) on an answer
  // that is not a stream, such as a proxy's 502: then a new one is made, waiting longer each time.
  var backoff = 1000;
  function listen() {
    if (!live || !window.EventSource || !live.getAttribute("data-stream")) {
      say("off (this browser has no EventSource)", "off");
      return;
    }
    var source = new EventSource(live.getAttribute("data-stream"));
    function changed(event) {
      say("on", "on");
      // the first event is the state now: it matches the page unless something changed since it was loaded
      if (event.lastEventId !== live.getAttribute("data-version")) {
        live.setAttribute("data-version", event.lastEventId);
        refresh();
      }
    }
    source.addEventListener("chart", changed);
    source.addEventListener("overview", changed);
    source.addEventListener("open", function () {
      backoff = 1000;
      say("on", "on");
    });
    // the server's own trouble, as the API's error body: signed out or refused is for good, the rest passes
    source.addEventListener("problem", function (event) {
      var problem = {};
      try {
        problem = JSON.parse(event.data);
      } catch (ignored) {}
      if (problem.status === 401) {
        source.close();
        say("off: sign in again (reload the page)", "off");
      } else if (problem.status === 403 || problem.status === 404) {
        source.close();
        say("off: " + (problem.message || "refused"), "off");
      } else {
        say("the service cannot read the store; trying again…", "reconnecting");
      }
    });
    source.addEventListener("error", function () {
      if (source.readyState !== EventSource.CLOSED) {
        say("reconnecting…", "reconnecting");
        return;
      }
      say("reconnecting in " + Math.round(backoff / 1000) + "s…", "reconnecting");
      window.setTimeout(listen, backoff);
      backoff = Math.min(backoff * 2, 60000);
    });
  }

  // "in 3m 20s" until a time state falls due, counted down here; the server moves the chart when it is due.
  function duration(seconds) {
    var s = Math.max(0, Math.floor(seconds));
    var d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    if (d) { return d + "d " + h + "h"; }
    if (h) { return h + "h " + m + "m"; }
    return m ? m + "m " + (s % 60) + "s" : (s % 60) + "s";
  }
  function tick() {
    var now = Date.now();
    var due = document.querySelectorAll("[data-due]");
    for (var i = 0; i < due.length; i++) {
      var at = Date.parse(due[i].getAttribute("data-due"));
      if (!isNaN(at)) {
        due[i].textContent = at > now ? "in " + duration((at - now) / 1000) : "due now";
      }
    }
  }

  // A button's form asks first; once confirmed it says so to the server, which otherwise asks on a page.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute("data-confirm");
    if (!question) {
      return;
    }
    if (!window.confirm(question)) {
      event.preventDefault();
      return;
    }
    if (form.elements.confirmed) {
      form.elements.confirmed.value = "yes";
    }
  });

  listen();
  tick();
  window.setInterval(tick, 1000);
})();
