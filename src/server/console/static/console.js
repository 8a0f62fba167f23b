// iot-authz console: live updates for Recent decisions (server-sent events). Everything
// the server sends is put into the page as text (textContent), never as markup. Without
// this script the page still shows the decisions kept at load time.
"use strict";

(function () {
  const main = document.querySelector("[data-events]");
  if (!main || typeof EventSource === "undefined") {
    return;
  }
  const status = document.getElementById("live-status");
  const denies = document.getElementById("denies-body");
  const allows = document.getElementById("allows-body");
  const limit = Number(main.getAttribute("data-limit")) || 100;

  function cell(row, text, code) {
    const td = document.createElement("td");
    if (code && text) {
      const c = document.createElement("code");
      c.textContent = text;
      td.appendChild(c);
    } else {
      td.textContent = text || "";
    }
    row.appendChild(td);
    return td;
  }

  function add(item) {
    const body = item.allowed ? allows : denies;
    if (!body) {
      return;
    }
    const empty = body.querySelector("tr.empty");
    if (empty) {
      empty.remove();
    }
    const row = document.createElement("tr");
    row.className = "live";
    cell(row, item.time, false);
    const idCell = cell(row, "", false);
    const link = document.createElement("a");
    link.href = "/console/check?decision=" + encodeURIComponent(item.decisionId);
    link.textContent = item.decisionId;
    idCell.appendChild(link);
    cell(row, item.principal, true);
    cell(row, item.action, true);
    cell(row, item.scope, true);
    cell(row, item.reason + (item.shadow ? " (shadow)" : ""), false);
    cell(row, item.detail, true);
    cell(row, item.api, false);
    body.insertBefore(row, body.firstChild);
    while (body.rows.length > limit) {
      body.deleteRow(body.rows.length - 1);
    }
    const count = document.getElementById(item.allowed ? "allows-count" : "denies-count");
    if (count) {
      count.textContent = String(body.querySelectorAll("tr:not(.empty)").length);
    }
  }

  const source = new EventSource(main.getAttribute("data-events"));
  source.addEventListener("open", function () {
    if (status) {
      status.textContent = "Live: new decisions appear at the top of their table.";
    }
  });
  source.addEventListener("error", function () {
    if (!status) {
      return;
    }
    // CLOSED: the server refused the stream (no longer allowed, or too many watchers).
    status.textContent = source.readyState === EventSource.CLOSED
      ? "Live updates stopped; reload the page to try again."
      : "Live updates interrupted; reconnecting.";
  });
  source.addEventListener("decision", function (event) {
    try {
      add(JSON.parse(event.data));
    } catch (e) {
      // A malformed event is skipped.
    }
  });
})();
