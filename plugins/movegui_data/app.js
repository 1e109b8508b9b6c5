// dcm_movegui page: plain script, no build step.  Every request carries the token.
"use strict";

const TOKEN = document.querySelector('meta[name="token"]').content;
const $ = (id) => document.getElementById(id);
let FIELDS = [];
let preview = null;     // the last preview, while the form is unchanged
let pickerTarget = null;
let recipeTimer = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

async function api(path, body) {
  const options = body === undefined
    ? {headers: {"X-Dcmpipe-Token": TOKEN}}
    : {method: "POST", headers: {"X-Dcmpipe-Token": TOKEN, "Content-Type": "application/json"},
       body: JSON.stringify(body)};
  const response = await fetch(path, options);
  let data = {};
  try { data = await response.json(); } catch (e) { data = {errors: {"": `server answered ${response.status}`}}; }
  if (!response.ok && !data.errors) data.errors = {"": `server answered ${response.status}`};
  return data;
}

// -- the form, generated from the command's switches -------------------------

function buildForm(fields) {
  const box = $("fields");
  for (const f of fields) {
    const id = "f-" + f.name;
    const row = el("div", {class: "field " + f.kind, "data-name": f.name});
    const label = el("label", {htmlFor: id},
      el("span", {class: "switch"}, f.switch), " ", f.help);
    let input;
    if (f.kind === "flag") {
      input = el("input", {type: "checkbox", id, checked: f.default});
      row.append(input, label);
    } else {
      if (f.kind === "choice") {
        input = el("select", {id}, el("option", {value: ""}, "(any)"),
          ...f.choices.map((c) => el("option", {value: c}, c)));
        input.value = f.default;
      } else {
        input = el("input", {type: f.kind === "number" ? "number" : "text", id, value: f.default,
          spellcheck: false});
        if (f.kind === "number") input.step = "any";
      }
      row.append(label, input);
      if (f.kind === "folder") {
        const browse = el("button", {type: "button", class: "quiet browse", id: "browse-" + f.name}, "Browse…");
        browse.addEventListener("click", () => openPicker(f.name));
        row.append(browse);
      }
    }
    input.name = f.name;
    input.addEventListener("input", formChanged);
    input.addEventListener("change", formChanged);
    row.append(el("div", {class: "error", id: "err-" + f.name, role: "alert"}),
      el("div", {class: "warning", id: "warn-" + f.name, role: "status"}));
    box.append(row);
  }
}

function values() {
  const out = {};
  for (const f of FIELDS) {
    const input = $("f-" + f.name);
    out[f.name] = f.kind === "flag" ? input.checked : input.value;
  }
  return out;
}

function showErrors(errors) {
  document.querySelectorAll(".error").forEach((e) => { e.textContent = ""; });
  document.querySelectorAll(".field.bad").forEach((e) => e.classList.remove("bad"));
  for (const [name, message] of Object.entries(errors || {})) {
    const box = $("err-" + name) || $("err-");
    box.textContent = message;
    const row = document.querySelector(`.field[data-name="${name}"]`);
    if (row) row.classList.add("bad");
  }
}

function formChanged() {
  document.querySelectorAll(".field .warning").forEach((e) => { e.textContent = ""; });
  if (preview) {
    preview = null;
    $("run").disabled = true;
    $("preview-box").classList.add("stale");
  }
  clearTimeout(recipeTimer);
  recipeTimer = setTimeout(updateRecipe, 250);
}

function selection() {
  const boxes = [...document.querySelectorAll("input.study")];
  const keep = boxes.filter((b) => b.checked).map((b) => b.value);
  return {keep, all: keep.length === boxes.length};
}

let epoch = 0;  // a preview started since a recipe request was sent makes its answer stale

async function updateRecipe() {
  const body = {values: values(), check: false};
  if (preview) Object.assign(body, selection());
  const sent = epoch;
  const data = await api("/api/recipe", body);
  if (sent !== epoch) return;
  if (data.errors) { showErrors(data.errors); return; }
  showErrors({});
  $("command").textContent = data.command;
  $("toml").textContent = data.toml;
  $("command-note").textContent = data.note || "";
}

// -- preview ------------------------------------------------------------------

function plural(n, word) { return `${n.toLocaleString()} ${word}${n === 1 ? "" : "s"}`; }

async function doPreview(event) {
  event.preventDefault();
  epoch += 1;
  clearTimeout(recipeTimer);
  $("preview").disabled = true;
  $("run").disabled = true;
  $("preview").textContent = "Previewing…";
  $("summary-box").hidden = true;
  try {
    const data = await api("/api/preview", {values: values()});
    if (data.errors) { showErrors(data.errors); $("preview-box").hidden = true; preview = null; return; }
    showErrors({});
    preview = data;
    showPreview(data);
    $("run").disabled = data.studies.length === 0 && data.nondicom.count === 0;
    updateRecipe();
  } finally {
    $("preview").disabled = false;
    $("preview").textContent = "Preview";
    $("form").dataset.previews = String(Number($("form").dataset.previews || 0) + 1);
  }
}

function showPreview(data) {
  $("preview-box").hidden = false;
  $("preview-box").classList.remove("stale");
  $("preview-line").textContent = data.line;
  const warnings = $("preview-warnings");
  warnings.textContent = "";
  for (const [name, message] of Object.entries(data.warnings || {})) {
    const box = $("warn-" + name);
    if (box) box.textContent = message;
    warnings.append(el("p", {}, message));
  }
  const list = $("studies");
  list.textContent = "";
  const oneRoot = data.roots.length === 1;
  $("preview-roots").textContent = oneRoot ? `Into ${data.roots[0]}/` : "";
  for (const s of data.studies) {
    const box = el("input", {type: "checkbox", class: "study", value: s.uid, checked: true,
      "data-study-id": s.study_id});
    box.addEventListener("change", () => { updateRecipe(); });
    const title = el("label", {class: "study-title"}, box,
      el("b", {}, `Study ${s.study_id || "?"}`), ` ${s.description ? "“" + s.description + "” " : ""}`,
      `patient ${s.patient || "?"} (ID ${s.patient_id || "?"}), ${s.date || "no date"}, `,
      `${s.series_count.toLocaleString()} series, ${plural(s.files, "file")}`);
    const series = el("ul", {class: "series"});
    for (const r of s.series) {
      const more = r.files > r.examples.length ? " …" : "";
      series.append(el("li", {},
        el("span", {class: "folder"}, oneRoot ? r.folder + "/" : `${r.root}/${r.folder}`),
        ` ${r.description ? "(" + r.description + ") " : ""}`,
        `${plural(r.files, "file")}: `, el("code", {}, r.examples.join(", ") + more)));
    }
    for (const [reason, n] of s.skipped) series.append(el("li", {class: "skip"}, `${plural(n, "file")} left in place: ${reason}`));
    list.append(el("div", {class: "study-box"}, title, series));
  }
  const others = $("others");
  others.textContent = "";
  if (data.nondicom.count) {
    others.append(el("p", {}, `${plural(data.nondicom.count, "non-DICOM file")}: `,
      el("code", {}, data.nondicom.examples.join(", ") + (data.nondicom.count > data.nondicom.examples.length ? " …" : "")),
      " (to bad/ unless -b)"));
  }
  if (data.failed.length) {
    others.append(el("p", {class: "error"}, `${plural(data.failed.length, "file")} cannot be processed:`));
    others.append(el("ul", {}, ...data.failed.map((f) => el("li", {}, `${f.file}: ${f.reason}`))));
  }
  if (!data.studies.length && !data.nondicom.count) others.append(el("p", {}, "Nothing to do."));
}

function tick(on) {
  document.querySelectorAll("input.study").forEach((b) => { b.checked = on; });
  updateRecipe();
}

// -- run ------------------------------------------------------------------------

function secondsText(s) {
  if (s === null || s === undefined) return "";
  if (s < 60) return `${Math.ceil(s)} s left`;
  return `${Math.floor(s / 60)} min ${Math.ceil(s % 60)} s left`;
}

async function doRun() {
  if (!preview) return;
  const body = {values: values(), ...selection(), total: preview.total};
  $("run").disabled = true;
  $("preview").disabled = true;
  const data = await api("/api/run", body);
  if (data.errors) { showErrors(data.errors); $("run").disabled = false; $("preview").disabled = false; return; }
  showErrors({});
  $("cancel").hidden = false;
  $("cancel").disabled = false;
  $("progress-box").hidden = false;
  $("summary-box").hidden = true;
  $("bar").value = 0;
  $("progress-text").textContent = "starting…";
  const events = new EventSource(`/api/events?job=${encodeURIComponent(data.job)}&token=${encodeURIComponent(TOKEN)}`);
  events.addEventListener("progress", (e) => {
    const p = JSON.parse(e.data);
    $("bar").value = p.fraction;
    const count = p.phase === "reading headers" ? p.read : p.done;
    $("progress-text").textContent =
      `${p.phase}: ${count.toLocaleString()} / ${p.total.toLocaleString()} files · ` +
      `${Math.round(p.files_per_s).toLocaleString()} files/s · ${secondsText(p.seconds_left)}`;
    $("progress-text").dataset.updates = String(Number($("progress-text").dataset.updates || 0) + 1);
  });
  events.addEventListener("done", (e) => {
    events.close();
    finished(JSON.parse(e.data));
  });
  events.onerror = () => { events.close(); $("progress-text").textContent = "lost contact with the server"; };
}

function finished(r) {
  $("cancel").hidden = true;
  $("preview").disabled = false;
  $("bar").value = r.interrupted ? $("bar").value : 1;
  $("progress-text").textContent = r.interrupted ? "cancelled: the files already done stay done" : "finished";
  preview = null;
  $("run").disabled = true;
  $("preview-box").classList.add("stale");
  $("summary-box").hidden = false;
  $("summary-box").dataset.state = r.interrupted ? "cancelled" : (r.error ? "error" : "finished");
  $("summary-line").textContent = r.error ? `error: ${r.error}` : r.line;
  const verb = {move: "moved", copy: "copied", rename: "renamed"}[r.mode] || "written";
  const rows = [[verb, r.written], ["skipped (left in place)", r.skipped], ["bad (not DICOM)", r.bad],
    ["failed", r.failed]];
  const table = $("summary");
  table.textContent = "";
  for (const [label, n] of rows) {
    table.append(el("tr", {"data-count": label.split(" ")[0]}, el("th", {}, label), el("td", {}, n.toLocaleString())));
  }
  const fails = $("failures");
  fails.textContent = "";
  if (r.failures.length) {
    fails.append(el("h3", {}, "Failed files"));
    fails.append(el("ul", {}, ...r.failures.map((f) => el("li", {}, el("code", {}, f.file), `: ${f.reason}`))));
  }
  if (r.skipped_reasons.length) {
    fails.append(el("h3", {}, "Skipped"));
    fails.append(el("ul", {}, ...r.skipped_reasons.map(([reason, n]) => el("li", {}, `${plural(n, "file")}: ${reason}`))));
  }
  const messages = $("messages");
  messages.textContent = "";
  if (r.messages.length) {
    messages.append(el("h3", {}, "Messages"));
    messages.append(el("pre", {}, r.messages.join("\n")));
  }
}

async function doCancel() {
  $("cancel").disabled = true;
  $("progress-text").textContent = "stopping after the files in progress…";
  await api("/api/cancel", {});
}

// -- the folder picker (browses the server's file system) -----------------------

async function browseTo(path) {
  const data = await api("/api/browse?path=" + encodeURIComponent(path));
  if (data.errors) return;
  $("picker-path").value = data.path;
  $("picker-up").dataset.parent = data.parent;
  $("picker-up").disabled = !data.parent;
  $("picker-info").textContent = data.error || `${plural(data.folders.length, "folder")}, ${plural(data.files, "file")}`;
  const list = $("picker-list");
  list.textContent = "";
  for (const name of data.folders) {
    const item = el("li", {}, el("button", {type: "button", class: "quiet folder-entry"}, name + "/"));
    item.firstChild.addEventListener("click", () => browseTo(data.path.replace(/\/$/, "") + "/" + name));
    list.append(item);
  }
}

function openPicker(name) {
  pickerTarget = name;
  $("picker").showModal();
  browseTo($("f-" + name).value);
}

// -- saving, copying, quitting ----------------------------------------------------

async function doSave() {
  $("saved").textContent = "";
  const body = {values: values(), path: $("f-save").value};
  if (preview) Object.assign(body, selection());
  const data = await api("/api/save", body);
  if (data.errors) { showErrors(data.errors); return; }
  showErrors({});
  $("saved").textContent = `saved to ${data.saved}`;
}

async function copy(id) {
  const text = $(id).textContent;
  try { await navigator.clipboard.writeText(text); }
  catch (e) {
    const range = document.createRange();
    range.selectNodeContents($(id));
    const sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
    document.execCommand("copy");
  }
}

async function doQuit() {
  await api("/api/quit", {});
  $("form").hidden = true;
  for (const id of ["preview-box", "progress-box", "equivalent"]) $(id).hidden = true;
  $("stopped").hidden = false;
  $("quit").disabled = true;
}

async function start() {
  const data = await api("/api/form");
  FIELDS = data.fields;
  buildForm(FIELDS);
  $("form").addEventListener("submit", doPreview);
  $("run").addEventListener("click", doRun);
  $("cancel").addEventListener("click", doCancel);
  $("quit").addEventListener("click", doQuit);
  $("save").addEventListener("click", doSave);
  $("tick-all").addEventListener("click", () => tick(true));
  $("tick-none").addEventListener("click", () => tick(false));
  document.querySelectorAll("button.copy").forEach((b) => b.addEventListener("click", () => copy(b.dataset.copy)));
  $("picker-up").addEventListener("click", () => browseTo($("picker-up").dataset.parent));
  $("picker-go").addEventListener("click", () => browseTo($("picker-path").value));
  $("picker-cancel").addEventListener("click", () => $("picker").close());
  $("picker-choose").addEventListener("click", () => {
    $("f-" + pickerTarget).value = $("picker-path").value;
    $("picker").close();
    formChanged();
  });
  document.body.dataset.ready = "yes";
  updateRecipe();
}

start();
