/* Sorting and filtering of the report's tables. Plain DOM code: no library, no request.
   Names from the data are only ever read through textContent, never written as HTML. */
(function () {
  "use strict";

  function cellKey(row, col, numeric) {
    var cell = row.cells[col];
    var raw = cell.getAttribute("data-value");
    if (raw === null) { raw = cell.textContent; }
    if (!numeric) { return raw.trim().toLowerCase(); }
    var value = parseFloat(raw);
    return isNaN(value) ? -Infinity : value;
  }

  /* Sort a table's body by one column; returns the column's new order ("ascending"/"descending"). */
  function sortTable(table, col, descending) {
    var header = table.tHead.rows[0].cells;
    var numeric = header[col].getAttribute("data-type") === "num";
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = cellKey(a, col, numeric), y = cellKey(b, col, numeric);
      var order = x < y ? -1 : (x > y ? 1 : 0);
      return descending ? -order : order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    for (var i = 0; i < header.length; i++) { header[i].removeAttribute("aria-sort"); }
    var state = descending ? "descending" : "ascending";
    header[col].setAttribute("aria-sort", state);
    return state;
  }

  function applyFilter(table) {
    var box = document.getElementById(table.id + "-filter");
    var testedOnly = document.getElementById(table.id + "-tested");
    var group = document.getElementById(table.id + "-group");
    var query = box ? box.value.trim().toLowerCase() : "";
    var shown = 0, rows = table.tBodies[0].rows;
    for (var i = 0; i < rows.length; i++) {
      var row = rows[i];
      var visible = row.cells[0].textContent.toLowerCase().indexOf(query) !== -1;
      if (visible && testedOnly && testedOnly.checked) { visible = row.getAttribute("data-support") !== "0"; }
      if (visible && group && group.value) { visible = row.getAttribute("data-group") === group.value; }
      row.hidden = !visible;
      if (visible) { shown++; }
    }
    var count = document.getElementById(table.id + "-count");
    if (count) { count.textContent = shown + " of " + rows.length + " identities shown"; }
    return shown;
  }

  window.facecls = {
    sort: function (tableId, col, descending) {
      return sortTable(document.getElementById(tableId), col, !!descending);
    },
    filter: function (tableId, query) {
      var box = document.getElementById(tableId + "-filter");
      if (box) { box.value = query; }
      return applyFilter(document.getElementById(tableId));
    }
  };

  var tables = document.querySelectorAll("table.sortable");
  Array.prototype.forEach.call(tables, function (table) {
    var header = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(header, function (th, col) {
      th.setAttribute("tabindex", "0");
      function activate() {
        /* Numbers start high-to-low (best first), names A to Z; a second click reverses. */
        var current = th.getAttribute("aria-sort");
        var numeric = th.getAttribute("data-type") === "num";
        var descending = current ? current === "ascending" : numeric;
        sortTable(table, col, descending);
      }
      th.addEventListener("click", activate);
      th.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") { event.preventDefault(); activate(); }
      });
    });
    ["-filter", "-tested", "-group"].forEach(function (suffix) {
      var control = document.getElementById(table.id + suffix);
      if (control) {
        control.addEventListener("input", function () { applyFilter(table); });
        control.addEventListener("change", function () { applyFilter(table); });
      }
    });
    applyFilter(table);
  });
}());
