// Tide console: reads only the admin API (/admin/v1/...) with the key the person signs in with.
// The key lives in this tab's sessionStorage and travels only as an Authorization header.
"use strict";
(() => {
  const KEY = "tide.console.key";
  const POLL_MS = 2000;
  const VIEWS = ["cluster", "endpoints", "workers", "usage"];
  const $ = (id) => document.getElementById(id);
  let timer = null;
  let catalogs = null; // typeId -> MIG catalog (grid, profiles)
  let state = { status: null, nodes: [], workers: [], endpoints: [] };

  // ---- small helpers -------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k.startsWith("data-")) node.setAttribute(k, v);
      else if (k === "title") node.title = v;
      else node[k] = v;
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : String(c));
    }
    return node;
  }
  function hue(name) {
    let h = 0;
    for (const ch of name) h = (h * 31 + ch.codePointAt(0)) >>> 0;
    return (h * 137) % 360;
  }
  const colour = (ep, light = 60) => `hsl(${hue(ep)} 65% ${light}%)`;
  const swatch = (ep) => {
    const s = el("span", { class: "swatch" });
    s.style.background = colour(ep);
    return s;
  };
  const ago = (t) => (t ? `${Math.max(0, Math.round(Date.now() / 1000 - t))} s ago` : "");
  const fmt = (n, d = 0) => Number(n).toLocaleString(undefined, { maximumFractionDigits: d });

  // ---- the admin API -------------------------------------------------------------------
  async function api(path) {
    const key = sessionStorage.getItem(KEY) || "";
    const resp = await fetch(path, { headers: { Authorization: `Bearer ${key}` }, cache: "no-store" });
    let body = null;
    try { body = await resp.json(); } catch (_) { body = null; }
    if (!resp.ok) {
      const err = new Error((body && body.error) || `${resp.status} ${resp.statusText}`);
      err.status = resp.status;
      throw err;
    }
    return body;
  }

  function keyRefused(err) {
    if (err.status === 401) {
      return `That key was not accepted (${err.message}). Sign in with an admin key, or a ` +
        "read-only one made with 'tide keys create NAME --scope viewer'.";
    }
    if (err.status === 403) {
      return `That key cannot read the admin API (${err.message}): client (endpoint) and node ` +
        "keys are refused here; use an admin or viewer key.";
    }
    return `The coordinator did not answer (${err.message}); is it running?`;
  }

  // ---- sign in / out -------------------------------------------------------------------
  async function signIn(event) {
    event.preventDefault();
    const key = $("key").value.trim();
    $("signin-error").hidden = true;
    sessionStorage.setItem(KEY, key);
    try {
      await api("/admin/v1/status");
    } catch (err) {
      sessionStorage.removeItem(KEY);
      $("signin-error").textContent = keyRefused(err);
      $("signin-error").hidden = false;
      return;
    }
    $("key").value = "";
    start();
  }

  function signOut() {
    sessionStorage.removeItem(KEY);
    clearTimeout(timer);
    timer = null;
    for (const id of ["nav", "signout", "error"]) $(id).hidden = true;
    for (const v of VIEWS) $(`view-${v}`).hidden = true;
    $("updated").textContent = "";
    $("signin").hidden = false;
  }

  function start() {
    $("signin").hidden = true;
    $("nav").hidden = false;
    $("signout").hidden = false;
    showView();
    refresh();
  }

  function currentView() {
    const v = location.hash.replace("#", "");
    return VIEWS.includes(v) ? v : "cluster";
  }

  function showView() {
    const v = currentView();
    for (const name of VIEWS) $(`view-${name}`).hidden = name !== v;
    for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.view === v);
  }

  // ---- polling -------------------------------------------------------------------------
  async function refresh() {
    clearTimeout(timer);
    if (!sessionStorage.getItem(KEY)) return;
    try {
      if (catalogs === null) {
        const list = await api("/admin/v1/mig/catalogs");
        catalogs = Object.fromEntries(list.map((c) => [c.typeId, c]));
      }
      const [status, nodes, workers, endpoints] = await Promise.all([
        api("/admin/v1/status"), api("/admin/v1/nodes"), api("/admin/v1/workers"), api("/admin/v1/endpoints"),
      ]);
      state = { status, nodes, workers, endpoints };
      render();
      if (currentView() === "usage") await renderUsage();
      $("error").hidden = true;
      $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    } catch (err) {
      if (err.status === 401 || err.status === 403) {
        signOut();
        $("signin-error").textContent = keyRefused(err);
        $("signin-error").hidden = false;
        return;
      }
      $("error").textContent = keyRefused(err);
      $("error").hidden = false;
    }
    timer = setTimeout(refresh, POLL_MS);
  }

  function render() {
    const v = currentView();
    if (v === "cluster") renderCluster();
    else if (v === "endpoints") renderEndpoints();
    else if (v === "workers") renderWorkers();
  }

  // ---- cluster: every host's GPUs, each a bar cut into its MIG slices --------------------
  const endpointName = (id) => {
    const ep = state.endpoints.find((e) => e.id === id);
    return ep ? ep.name : id;
  };

  function renderCluster() {
    const s = state.status;
    const stat = (label, value) => el("div", { class: "stat" }, el("b", {}, value), label);
    $("summary").replaceChildren(
      stat("endpoints", s.endpoints), stat("jobs queued", s.queued), stat("jobs running", s.running),
      stat("hosts", `${s.nodes.total - s.nodes.lost} / ${s.nodes.total}`), stat("workers", s.workers.total),
      stat("GPUs", state.nodes.reduce((n, h) => n + h.inventory.gpus.length, 0)),
    );
    renderLegend();
    const byDevice = new Map();
    for (const w of state.workers) for (const d of w.devices) byDevice.set(d, w);
    const regions = new Map();
    for (const host of state.nodes) {
      const r = host.inventory.region || "(no region)";
      const dc = host.inventory.datacenter || "(no data center)";
      if (!regions.has(r)) regions.set(r, new Map());
      const dcs = regions.get(r);
      if (!dcs.has(dc)) dcs.set(dc, []);
      dcs.get(dc).push(host);
    }
    const out = document.createDocumentFragment();
    for (const [r, dcs] of regions) {
      const region = el("div", { class: "region" }, el("h3", {}, `Region ${r}`));
      for (const [dc, hosts] of dcs) {
        const box = el("div", { class: "dc" }, el("h4", {}, `Data center ${dc}`));
        for (const host of hosts) box.append(drawHost(host, byDevice));
        region.append(box);
      }
      out.append(region);
    }
    if (!state.nodes.length) out.append(el("p", { class: "muted" }, "No GPU hosts have registered yet."));
    $("hosts").replaceChildren(out);
  }

  function renderLegend() {
    const item = (cls, text, ep) => {
      const s = ep ? swatch(ep) : el("span", { class: `swatch ${cls}` });
      if (cls === "free") s.style.background = "#eef0f3";
      if (cls === "uncut") s.style.background = "#e4e7ec";
      return el("span", {}, s, text);
    };
    const items = [item("free", "free slice or card"), item("uncut", "not cut (no MIG instance)")];
    for (const ep of state.endpoints) items.push(item("", ep.name, ep.id));
    items.push(el("span", { class: "muted" }, "solid: running a job · light: idle (warm) · striped: starting · ticks: MIG memory units"));
    $("legend").replaceChildren(...items);
  }

  function drawHost(host, byDevice) {
    const cls = host.lost ? "host lost" : host.draining ? "host draining" : "host";
    const head = el("div", { class: "host-head" }, el("b", {}, host.id),
      el("span", { class: "muted" }, `${host.inventory.gpus.length} GPU(s) · heartbeat ${host.heartbeatAgeS} s ago`));
    if (host.lost) head.append(el("span", { class: "badge lost" }, "lost"));
    if (host.draining) head.append(el("span", { class: "badge draining" }, "draining"));
    const box = el("div", { class: cls, "data-node": host.id }, head);
    for (const gpu of host.inventory.gpus) box.append(drawGpu(host, gpu, byDevice));
    return box;
  }

  function drawGpu(host, gpu, byDevice) {
    const bar = el("div", { class: "bar", "data-gpu": gpu.uuid, "data-mig": gpu.migEnabled ? "on" : "off" });
    if (gpu.migEnabled) {
      const cat = catalogs[gpu.typeId];
      const ends = gpu.migInstances.map((i) => i.start + i.size);
      const grid = cat ? cat.grid : Math.max(8, ...ends);
      for (let u = 1; u < grid; u++) {  // the card's memory-unit grid, under its slices
        const tick = el("span", { class: "tick" });
        tick.style.left = `${(u / grid) * 100}%`;
        bar.append(tick);
      }
      for (const inst of gpu.migInstances) {
        bar.append(slice(host, inst.uuid, byDevice.get(inst.uuid), inst.profile, inst.start / grid, inst.size / grid));
      }
    } else {
      bar.append(slice(host, gpu.uuid, byDevice.get(gpu.uuid), "whole card", 0, 1));
    }
    const mig = gpu.migEnabled ? ` · MIG ${gpu.migInstances.length} slice(s)` : "";
    const name = el("div", { class: "gpu-name", title: gpu.uuid }, `#${gpu.index} ${gpu.typeId}${mig}`);
    return el("div", { class: "gpu" }, name, bar);
  }

  function sliceClass(w) {
    if (!w) return "free";
    if (w.state === "running") return "busy";
    if (w.state === "pending" || w.state === "initializing") return "starting";
    if (w.state === "unhealthy" || w.state === "exited") return "busy bad";
    return "idle";
  }

  function slice(host, device, worker, label, left, width) {
    const cls = sliceClass(worker);
    const node = el("div", {
      class: `slice ${cls}`,
      "data-device": device,
      "data-state": worker ? worker.state : "free",
      "data-endpoint": worker ? worker.endpointId : "",
      title: worker ? `${label}: ${endpointName(worker.endpointId)} (${worker.state})` : `${label}: free`,
    }, worker ? `${label} · ${endpointName(worker.endpointId)} · ${worker.state}` : `${label} · free`);
    node.style.left = `calc(${left * 100}% + 2px)`;
    node.style.width = `calc(${width * 100}% - 4px)`;
    if (worker) node.style.backgroundColor = colour(worker.endpointId, cls === "idle" ? 84 : 60);
    node.addEventListener("click", () => showDetail(host, device, label, worker));
    return node;
  }

  async function showDetail(host, device, label, worker) {
    const box = $("detail");
    const close = el("button", { type: "button" }, "Close");
    close.addEventListener("click", () => { box.hidden = true; });
    const rows = [["host", host.id], ["device", device], ["slice", label]];
    if (worker) {
      rows.push(["endpoint", endpointName(worker.endpointId)], ["worker", worker.workerId],
        ["state", worker.state], ["restarts", worker.restarts]);
      if (worker.coldStart) rows.push(["cold start", `${fmt(worker.coldStart.totalMs)} ms`]);
    }
    const table = el("table", {}, ...rows.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v))));
    const logs = el("pre", {}, worker ? "loading logs…" : "no worker on this device");
    box.replaceChildren(close, el("h2", {}, worker ? "Worker" : "Free device"), table, logs);
    box.hidden = false;
    if (!worker) return;
    try {
      const got = await api(`/admin/v1/workers/${encodeURIComponent(worker.workerId)}/logs?tail=20`);
      logs.textContent = got.lines.join("\n") || "(no log lines yet)";
    } catch (err) {
      logs.textContent = `logs unavailable: ${err.message}`;
    }
  }

  // ---- endpoints, workers, usage -------------------------------------------------------
  function table(id, head, rows) {
    const thead = el("tr", {}, ...head.map(([h, cls]) => el("th", { class: cls || "" }, h)));
    const body = rows.map((cells) => el("tr", {}, ...cells.map(([v, cls]) => el("td", { class: cls || "" }, v))));
    $(id).replaceChildren(thead, ...body);
  }

  function renderEndpoints() {
    const head = [["Endpoint"], ["GPUs"], ["Workers min–max"], ["Queued", "num"], ["In progress", "num"],
      ["Workers running / idle / starting / unhealthy"], ["Done / failed", "num"], ["Last cold start"], ["Health"]];
    const rows = state.endpoints.map((ep) => {
      const j = ep.health.jobs, w = ep.health.workers;
      const why = ep.health.reason || ep.placement;
      const cold = ep.lastColdStart
        ? `${fmt(ep.lastColdStart.totalMs)} ms (${ep.lastColdStart.stages.map((s) => `${s.stage} ${fmt(s.ms)}`).join(", ")})`
        : "";
      return [
        [el("span", { class: "ep-name", "data-endpoint": ep.id }, swatch(ep.id), ep.name)],
        [ep.gpuTypeIds.join(", ") || "any"], [`${ep.workersMin}–${ep.workersMax}`],
        [j.inQueue, "num"], [j.inProgress, "num"],
        [`${w.running} / ${w.idle} / ${w.initializing} / ${w.unhealthy}`],
        [`${j.completed} / ${j.failed}`, "num"], [cold],
        [why ? el("span", { class: "health-wait" }, why) : el("span", { class: "health-ok" }, "ok")],
      ];
    });
    table("endpoints-table", head, rows);
  }

  function renderWorkers() {
    const groups = new Map(state.endpoints.map((e) => [e.id, []]));
    for (const w of state.workers) {
      if (!groups.has(w.endpointId)) groups.set(w.endpointId, []);
      groups.get(w.endpointId).push(w);
    }
    const out = [];
    for (const [ep, workers] of groups) {
      const rows = workers.map((w) => [
        [w.workerId], [w.nodeId], [w.gpuType], [w.devices.join(", ")],
        [el("span", { class: `state ${w.state}`, "data-worker": w.workerId }, w.state)],
        [w.restarts, "num"], [w.readyAt ? ago(w.readyAt) : ""],
        [w.coldStart ? `${fmt(w.coldStart.totalMs)} ms` : ""], [w.reason],
      ]);
      const t = el("table", { id: `workers-${ep}` });
      out.push(el("h3", { class: "ep-name" }, swatch(ep), `${endpointName(ep)} · ${workers.length} worker(s)`), t);
      $("workers-by-endpoint").replaceChildren(...out);
      table(t.id, [["Worker"], ["Host"], ["GPU"], ["Devices"], ["State"], ["Restarts", "num"], ["Ready"],
        ["Cold start"], ["Reason"]], rows.length ? rows : [[[el("span", { class: "muted" }, "no workers (scaled to zero)")]]]);
    }
    if (!out.length) $("workers-by-endpoint").replaceChildren(el("p", { class: "muted" }, "No endpoints."));
  }

  async function renderUsage() {
    const since = Math.floor(Date.now() / 1000) - 86400;
    const u = await api(`/admin/v1/usage?since=${since}`);
    const rows = u.rows.map((r) => [[endpointName(r.endpointId)], [r.gpuType], [fmt(r.gpuSeconds, 1), "num"],
      [`${fmt(r.cost, 4)} ${u.currency}`, "num"]]);
    rows.push([[el("b", {}, "total")], [""], [fmt(u.totalGpuSeconds, 1), "num"], [`${fmt(u.totalCost, 4)} ${u.currency}`, "num"]]);
    table("usage-table", [["Endpoint"], ["GPU / slice"], ["GPU-seconds", "num"], ["Cost", "num"]], rows);
  }

  // ---- wiring --------------------------------------------------------------------------
  window.addEventListener("DOMContentLoaded", () => {
    $("signin-form").addEventListener("submit", signIn);
    $("signout").addEventListener("click", signOut);
    window.addEventListener("hashchange", () => { showView(); refresh(); });
    if (sessionStorage.getItem(KEY)) start();
  });
})();
