(function () {
  "use strict";
  var errors = window.__auditErrors || [];
  var NUMBER = /^[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$/i;

  function cellKey(row, col) {
    var cell = row.cells[col];
    if (!cell) return "";
    var v = cell.getAttribute("data-v");
    return v !== null ? v : cell.textContent.trim();
  }

  // Natural order: digit runs compare as numbers, other runs by lower-cased code units.
  function natural(a, b) {
    var x = a.toLowerCase().match(/\d+|\D+/g) || [];
    var y = b.toLowerCase().match(/\d+|\D+/g) || [];
    for (var i = 0; i < Math.min(x.length, y.length); i++) {
      var p = x[i], q = y[i];
      if (p === q) continue;
      if (/^\d/.test(p) && /^\d/.test(q) && Number(p) !== Number(q)) return Number(p) - Number(q);
      return p < q ? -1 : 1;
    }
    return x.length - y.length;
  }

  function compare(a, b) {
    if (NUMBER.test(a) && NUMBER.test(b)) return Number(a) - Number(b);
    return natural(a, b);
  }

  function sortTable(table, col, dir) {
    var body = table.tBodies[0];
    if (!body) return;
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (r1, r2) {
      var a = cellKey(r1, col), b = cellKey(r2, col);
      // Undefined values ("n/a") stay at the bottom in both directions.
      if (a === "" || b === "") return (a === "") - (b === "");
      var c = compare(a, b);
      return dir === "descending" ? -c : c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    var ths = table.tHead.rows[0].cells;
    for (var i = 0; i < ths.length; i++) {
      ths[i].setAttribute("aria-sort", i === col ? dir : "none");
    }
  }

  function onHeader(table, th) {
    var dir = th.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
    sortTable(table, th.cellIndex, dir);
  }

  function columnKeys(table, col) {
    return Array.prototype.map.call(table.tBodies[0].rows, function (r) { return cellKey(r, col); });
  }

  // The histogram level selector: every histogram shows the chosen pruned level's outline.
  function showLevel(level) {
    var layers = document.querySelectorAll("svg.plot g.hist-level");
    Array.prototype.forEach.call(layers, function (g) {
      g.classList.toggle("off", g.getAttribute("data-level") !== level);
    });
  }

  function visibleLevels() {
    var seen = {};
    Array.prototype.forEach.call(document.querySelectorAll("svg.plot g.hist-level"), function (g) {
      if (g.getBoundingClientRect().width > 0) {
        var level = g.getAttribute("data-level");
        seen[level] = (seen[level] || 0) + 1;
      }
    });
    return seen;
  }

  // Test-only: once the page has loaded (inline images decoded), open every <details> so
  // that collapsed plots are laid out too, and record the rendered size of every plot and
  // image and the decoded size of every image.
  function measure() {
    try {
      Array.prototype.forEach.call(document.querySelectorAll("details"), function (d) {
        d.open = true;
      });
      Array.prototype.forEach.call(document.querySelectorAll("svg.plot, img"), function (el) {
        var r = el.getBoundingClientRect();
        el.setAttribute("data-selftest-size", Math.round(r.width) + "x" + Math.round(r.height));
        if (el.tagName.toLowerCase() === "img") {
          el.setAttribute("data-selftest-natural", el.naturalWidth + "x" + el.naturalHeight);
        }
      });
    } catch (err) {
      errors.push("report.js selftest: " + String(err));
    }
    document.body.setAttribute("data-selftest", "done");
  }

  // Test-only: with #selftest in the URL, sort every table by its first column (ascending,
  // then descending) and by its first numeric column, and record the resulting orders; then
  // pick the last histogram level and record which levels are drawn (level -> panels); then
  // measure the page on load.
  function selftest(tables) {
    Array.prototype.forEach.call(tables, function (table) {
      if (!table.tHead || !table.tBodies[0]) return;
      var first = table.tHead.rows[0].cells[0];
      first.click();
      table.setAttribute("data-selftest-asc", JSON.stringify(columnKeys(table, 0)));
      first.click();
      table.setAttribute("data-selftest-desc", JSON.stringify(columnKeys(table, 0)));
      var num = table.tHead.querySelector('th[data-type="num"]');
      if (num) {
        num.click();
        table.setAttribute("data-selftest-num-col", String(num.cellIndex));
        table.setAttribute("data-selftest-num", JSON.stringify(columnKeys(table, num.cellIndex)));
      }
    });
    var select = document.getElementById("hist-level");
    if (select && select.options.length) {
      var last = select.options[select.options.length - 1].value;
      select.value = last;
      select.dispatchEvent(new Event("change"));
      document.body.setAttribute("data-selftest-level", last);
      document.body.setAttribute("data-selftest-visible", JSON.stringify(visibleLevels()));
    }
    if (document.readyState === "complete") measure();
    else window.addEventListener("load", measure);
  }

  try {
    var tables = document.querySelectorAll("table.sortable");
    Array.prototype.forEach.call(tables, function (table) {
      if (!table.tHead) return;
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
        th.addEventListener("click", function () { onHeader(table, th); });
        th.addEventListener("keydown", function (e) {
          if (e.key === "Enter" || e.key === " ") {
            e.preventDefault();
            onHeader(table, th);
          }
        });
      });
    });
    var levels = document.getElementById("hist-level");
    if (levels) {
      levels.addEventListener("change", function () { showLevel(levels.value); });
      // a reload may restore an earlier choice in the form control: follow it
      showLevel(levels.value);
    }
    if (window.location.hash === "#selftest") selftest(tables);
  } catch (err) {
    errors.push("report.js: " + String(err));
  }

  function publish() {
    document.body.setAttribute("data-errors", JSON.stringify(errors));
  }
  publish();
  window.addEventListener("load", publish);
  document.body.setAttribute("data-ready", "1");
})();
