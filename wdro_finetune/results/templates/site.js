// Sort a table by a column (click its header; numbers by data-sort, text otherwise) and filter rows.
"use strict";

function sortKey(cell) {
  const raw = cell.getAttribute("data-sort");
  if (raw !== null && raw !== "" && !isNaN(Number(raw))) {
    return { num: Number(raw), text: "" };
  }
  return { num: null, text: cell.textContent.trim().toLowerCase() };
}

function compare(a, b) {
  if (a.num !== null && b.num !== null) { return a.num - b.num; }
  if (a.num !== null) { return -1; }
  if (b.num !== null) { return 1; }
  return a.text < b.text ? -1 : a.text > b.text ? 1 : 0;
}

function sortTable(table, index, header) {
  const descending = header.getAttribute("aria-sort") === "ascending";
  table.querySelectorAll("th").forEach((th) => th.removeAttribute("aria-sort"));
  header.setAttribute("aria-sort", descending ? "descending" : "ascending");
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  rows.sort((r, s) => {
    const order = compare(sortKey(r.cells[index]), sortKey(s.cells[index]));
    return descending ? -order : order;
  });
  rows.forEach((row) => body.appendChild(row));
}

function filterRows(query) {
  const words = query.toLowerCase().split(/\s+/).filter((w) => w);
  document.querySelectorAll("table.board tbody tr").forEach((row) => {
    const text = row.textContent.toLowerCase();
    row.classList.toggle("hidden", !words.every((w) => text.includes(w)));
  });
}

document.querySelectorAll("table.sortable").forEach((table) => {
  table.querySelectorAll("thead th").forEach((header, index) => {
    header.addEventListener("click", () => sortTable(table, index, header));
  });
});

const filter = document.getElementById("filter");
if (filter) {
  filter.addEventListener("input", () => filterRows(filter.value));
}
