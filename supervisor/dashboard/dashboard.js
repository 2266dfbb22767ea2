// Cute Animal Kids operator dashboard: polls the supervisor's API every 2 s and draws what it says.
// Plain ES2020, no dependencies. Every text from the API goes through textContent or an attribute,
// never through innerHTML. The token (if the supervisor has one) comes from "#token=…" in the URL
// or from the form, lives in sessionStorage (this tab only) and is sent as "Authorization: Bearer".
"use strict";

(() => {
  const POLL_MS = 2000;
  const HISTORY_POINTS = 90; // memory samples kept per instance (3 minutes at one per poll)
  const JOBS_SHOWN = 12;
  const TOKEN_KEY = "cak-dashboard-token";
  const SVG_NS = "http://www.w3.org/2000/svg";
  const SERVING = new Set(["ready", "busy"]);
  const FAULT_REASONS = new Set(["crash", "unresponsive", "hang", "leak", "warmup"]);
  const REASON_HELP = {
    crash: "the process exited on its own",
    unresponsive: "health probes of /system_stats failed in a row",
    hang: "a job sent no progress for too long, or ran past its time limit",
    leak: "memory passed its limit or grew too far over its baseline",
    warmup: "the warm-up prompt failed",
    recycle: "planned restart after health.max_jobs jobs",
    request: "an operator asked for the restart",
  };
  const PLACEHOLDER_TEXT = {
    queued: "Waiting in the queue",
    running: "Drawing…",
    failed: "Failed",
    cancelled: "Cancelled",
    rejected: "Rejected",
    succeeded: "No image",
  };

  const memoryHistory = new Map(); // instance name -> [{rss, device}]
  const thumbnails = new Map(); // image URL -> {objectUrl, failed, promise}
  const jobCards = new Map(); // job id -> {signature, element}
  let token = sessionStorage.getItem(TOKEN_KEY);
  let timer = null;
  let waitingForToken = false;

  const $ = (id) => document.getElementById(id);

  // ------------------------------------------------------------------ small DOM helpers

  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "className") node.className = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attributes = {}) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
    return node;
  }

  function setStatus(text, level) {
    const status = $("status");
    status.textContent = text;
    status.dataset.level = level;
  }

  // ------------------------------------------------------------------ formatting

  function formatMb(mb) {
    if (mb === null || mb === undefined) return "–";
    return mb >= 1024 ? `${(mb / 1024).toFixed(2)} GB` : `${Math.round(mb)} MB`;
  }

  function formatDuration(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return "";
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    const h = Math.floor(s / 3600);
    return h < 48 ? `${h} h ${Math.floor((s % 3600) / 60)} min` : `${Math.floor(h / 24)} days`;
  }

  function ago(epochSeconds) {
    if (!epochSeconds) return "";
    return `${formatDuration(Date.now() / 1000 - epochSeconds)} ago`;
  }

  function clockTime(epochSeconds) {
    return new Date(epochSeconds * 1000).toLocaleTimeString();
  }

  // ------------------------------------------------------------------ API access

  class Unauthorized extends Error {}

  async function api(path) {
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = `Bearer ${token}`;
    const response = await fetch(path, { headers, cache: "no-store", credentials: "omit" });
    if (response.status === 401) throw new Unauthorized("unauthorized");
    if (!response.ok) {
      let message = `HTTP ${response.status}`;
      try {
        const body = await response.json();
        if (body && body.error && body.error.message) message = `${message}: ${body.error.message}`;
      } catch (_) { /* not JSON */ }
      throw new Error(message);
    }
    return response.json();
  }

  function thumbnail(url) {
    // Images are behind the token too, so <img src> cannot fetch them: fetch with the header and
    // show the bytes through a blob: URL. Job images never change, so each is fetched once.
    let entry = thumbnails.get(url);
    if (entry) return entry;
    entry = { objectUrl: null, failed: false, promise: null };
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    entry.promise = fetch(url, { headers, credentials: "omit" })
      .then((response) => {
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        return response.blob();
      })
      .then((blob) => { entry.objectUrl = URL.createObjectURL(blob); })
      .catch(() => { entry.failed = true; });
    thumbnails.set(url, entry);
    return entry;
  }

  function forgetThumbnails(keep) {
    for (const [url, entry] of thumbnails) {
      if (keep.has(url)) continue;
      if (entry.objectUrl) URL.revokeObjectURL(entry.objectUrl);
      thumbnails.delete(url);
    }
  }

  // ------------------------------------------------------------------ token

  function readTokenFromUrl() {
    const match = /(?:^#|&)token=([^&]*)/.exec(window.location.hash);
    if (!match) return;
    token = decodeURIComponent(match[1]);
    sessionStorage.setItem(TOKEN_KEY, token);
    // Out of the address bar and the history at once.
    history.replaceState(null, "", window.location.pathname + window.location.search);
  }

  function askForToken(rejected) {
    waitingForToken = true;
    $("token-panel").hidden = false;
    const error = $("token-error");
    error.hidden = !rejected;
    error.textContent = rejected ? "That token was not accepted. Check it and try again." : "";
    $("forget-token").hidden = true;
    setStatus("Waiting for the token", "warn");
    $("token-input").focus();
  }

  function useToken(value) {
    token = value;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token-panel").hidden = true;
    waitingForToken = false;
    clearThumbnails();
    poll();
  }

  function clearThumbnails() {
    forgetThumbnails(new Set());
    for (const { element } of jobCards.values()) element.remove();
    jobCards.clear();
  }

  // ------------------------------------------------------------------ instances

  function recordMemory(instances) {
    const names = new Set();
    for (const instance of instances) {
      names.add(instance.name);
      const history = memoryHistory.get(instance.name) || [];
      history.push({ rss: instance.rss_mb, device: instance.device_mem_mb });
      if (history.length > HISTORY_POINTS) history.splice(0, history.length - HISTORY_POINTS);
      memoryHistory.set(instance.name, history);
    }
    for (const name of memoryHistory.keys()) if (!names.has(name)) memoryHistory.delete(name);
  }

  function sparkline(values, label, kind) {
    const width = 160;
    const height = 36;
    const known = values.filter((v) => v !== null && v !== undefined);
    const figure = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: `spark spark-${kind}`,
                                role: "img", preserveAspectRatio: "none" });
    const title = svg("title");
    if (known.length === 0) {
      title.textContent = `${label}: no samples yet`;
      figure.append(title);
      return figure;
    }
    const low = Math.min(...known);
    const high = Math.max(...known);
    // A flat line sits in the middle; otherwise the lowest sample is at the bottom, the highest on top.
    const flat = high - low < 1;
    const step = width / Math.max(values.length - 1, 1);
    const points = [];
    values.forEach((value, index) => {
      if (value === null || value === undefined) return;
      const x = values.length === 1 ? width : index * step;
      const y = flat ? height / 2 : height - 4 - ((value - low) / (high - low)) * (height - 8);
      points.push(`${x.toFixed(1)},${y.toFixed(1)}`);
    });
    title.textContent = `${label} over the last ${known.length} samples: ` +
      `lowest ${formatMb(low)}, highest ${formatMb(high)}`;
    figure.append(title);
    if (points.length > 1) {
      const first = points[0].split(",")[0];
      const last = points[points.length - 1].split(",")[0];
      figure.append(svg("polygon", { class: "spark-fill",
                                     points: `${first},${height} ${points.join(" ")} ${last},${height}` }));
    }
    figure.append(svg("polyline", { class: "spark-line", points: points.join(" ") }));
    const [lx, ly] = points[points.length - 1].split(",");
    figure.append(svg("circle", { class: "spark-dot", cx: lx, cy: ly, r: 2.5 }));
    return figure;
  }

  function memoryRow(label, current, values, kind) {
    return el("div", { className: "memory-row" },
      el("div", { className: "memory-text" },
        el("span", { className: "memory-label" }, label),
        el("span", { className: "memory-value" }, formatMb(current))),
      sparkline(values, label, kind));
  }

  function restartChips(restarts) {
    const entries = Object.entries(restarts || {}).filter(([, count]) => count > 0)
      .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
    if (entries.length === 0) return el("p", { className: "muted" }, "No restarts");
    const list = el("ul", { className: "chips", "aria-label": "Restarts by reason" });
    for (const [reason, count] of entries) {
      const kind = FAULT_REASONS.has(reason) ? "fault" : "planned";
      list.append(el("li", { className: `chip chip-${kind}`, title: REASON_HELP[reason] || reason,
                             "data-reason": reason },
        el("span", { className: "chip-reason" }, reason), " ",
        el("span", { className: "chip-count" }, count)));
    }
    return list;
  }

  function instanceCard(instance) {
    const history = memoryHistory.get(instance.name) || [];
    const state = String(instance.state || "unknown");
    const restartTotal = Object.values(instance.restarts || {}).reduce((a, b) => a + b, 0);
    const facts = el("dl", { className: "facts" },
      el("div", {}, el("dt", {}, "Jobs run"), el("dd", { className: "jobs-run" }, instance.jobs_run)),
      el("div", {}, el("dt", {}, "Up for"),
        el("dd", {}, instance.started_at ? formatDuration(Date.now() / 1000 - instance.started_at) : "–")),
      el("div", {}, el("dt", {}, "PID"), el("dd", {}, instance.pid ?? "–")));
    const card = el("article", { className: `card instance state-${state}`, "data-instance": instance.name,
                                 "data-state": state, "aria-label": `Instance ${instance.name}, ${state}` },
      el("header", { className: "card-head" },
        el("h3", { className: "instance-name" }, instance.name),
        el("span", { className: `badge badge-${state}` }, state)),
      memoryRow("RSS", instance.rss_mb, history.map((h) => h.rss), "rss"),
      instance.device_mem_mb !== null && instance.device_mem_mb !== undefined
        ? memoryRow("Device memory", instance.device_mem_mb, history.map((h) => h.device), "device") : null,
      facts,
      el("div", { className: "restarts" },
        el("h4", {}, `Restarts (${restartTotal})`),
        restartChips(instance.restarts),
        instance.last_restart_reason
          ? el("p", { className: "muted last-reason" }, `Last: ${instance.last_restart_reason}`) : null));
    return card;
  }

  function renderInstances(data) {
    const instances = data.instances || [];
    recordMemory(instances);
    const container = $("instances");
    container.replaceChildren(...instances.map(instanceCard));
    if (instances.length === 0) container.append(el("p", { className: "muted" }, "No instances configured."));
    $("queue-depth").textContent = data.queue_depth;
    $("running-jobs").textContent = data.running_jobs;
    const serving = instances.filter((i) => SERVING.has(String(i.state))).length;
    $("instances-serving").textContent = `${serving} / ${instances.length}`;
    const restarts = instances.reduce(
      (sum, i) => sum + Object.values(i.restarts || {}).reduce((a, b) => a + b, 0), 0);
    $("restarts-total").textContent = restarts;
  }

  // ------------------------------------------------------------------ hosts

  function renderHosts(data) {
    // Several supervisors on one PostgreSQL queue (docs/scaling.md): one line per live host.
    // One host is this page's own supervisor, already shown below: the block stays hidden.
    const hosts = data.hosts || [];
    $("hosts-block").hidden = hosts.length <= 1;
    $("hosts").replaceChildren(...hosts.map((host) => {
      const instances = host.instances || [];
      const serving = instances.filter((i) => SERVING.has(String(i.state))).length;
      return el("li", { className: "host", "data-host": host.name },
        el("strong", {}, host.name),
        el("span", { className: "muted" },
          ` ${serving} / ${instances.length} instances serving, heartbeat ${ago(host.heartbeat_at)}`));
    }));
  }

  // ------------------------------------------------------------------ jobs

  function jobSignature(job) {
    const progress = job.progress ? Math.round((job.progress.fraction || 0) * 100) : "";
    const hook = job.webhook ? `${job.webhook.state}/${job.webhook.attempts}/${job.webhook.last_status}` : "";
    return [job.state, progress, job.images.length, job.category, job.error, job.attempts.length, hook,
            Math.floor((Date.now() / 1000 - job.created_at) / 10)].join("|");
  }

  function placeholder(job) {
    let text = PLACEHOLDER_TEXT[job.state] || job.state;
    if (job.state === "running" && job.progress) {
      text = `Drawing… ${Math.round((job.progress.fraction || 0) * 100)}%`;
    }
    const box = el("div", { className: `thumb placeholder placeholder-${job.state}`, role: "img",
                            "aria-label": text },
      pawIcon("placeholder-icon"),
      el("span", { className: "placeholder-text" }, text));
    if (job.state === "rejected" && job.category) {
      box.append(el("span", { className: "category" }, job.category));
    }
    if (job.state === "running" && job.progress) {
      const bar = el("span", { className: "progress", "aria-hidden": "true" }, el("span", { className: "progress-bar" }));
      bar.firstChild.style.width = `${Math.round((job.progress.fraction || 0) * 100)}%`;
      box.append(bar);
    }
    return box;
  }

  function pawIcon(className) {
    // The logo's paw; its colour comes from the job's state (CSS). No emoji: kiosks lack the fonts.
    const icon = svg("svg", { viewBox: "0 0 64 64", class: className, "aria-hidden": "true", focusable: "false" });
    for (const [cx, cy, r] of [[32, 40, 14], [14, 24, 7], [25, 12, 7], [39, 12, 7], [50, 24, 7]]) {
      icon.append(svg("circle", { cx, cy, r }));
    }
    return icon;
  }

  function imageElement(job) {
    const url = job.images[0];
    const entry = thumbnail(url);
    const prompt = job.request && job.request.prompt ? job.request.prompt : "";
    const img = el("img", { className: "thumb", alt: prompt ? `Picture for “${prompt}”` : "Job picture",
                            "data-src": url, decoding: "async" });
    const show = () => {
      if (entry.objectUrl) img.src = entry.objectUrl;
      else if (entry.failed) img.replaceWith(el("div", { className: "thumb placeholder placeholder-failed" },
        el("span", { className: "placeholder-text" }, "Image unavailable")));
    };
    if (entry.objectUrl || entry.failed) show();
    else entry.promise.then(show);
    return img;
  }

  function jobCard(job) {
    const request = job.request || {};
    const attempts = job.attempts || [];
    const last = attempts[attempts.length - 1];
    const finished = job.finished_at ? formatDuration(job.finished_at - job.created_at) : "";
    const details = el("dl", { className: "facts" },
      el("div", {}, el("dt", {}, "Submitted"),
        el("dd", { title: clockTime(job.created_at) }, ago(job.created_at))),
      finished ? el("div", {}, el("dt", {}, "Took"), el("dd", {}, finished)) : null,
      // Only while it runs there or after it ran there: a job back in the queue is on no instance.
      last && job.state !== "queued" ? el("div", {}, el("dt", {}, "Instance"), el("dd", {}, last.instance)) : null,
      attempts.length > 1 ? el("div", {}, el("dt", {}, "Attempts"),
        el("dd", { title: attempts.map((a) => `${a.instance}: ${a.reason || "running"}`).join(", ") },
          attempts.length)) : null,
      job.webhook ? el("div", { className: `webhook webhook-${job.webhook.state}` }, el("dt", {}, "Webhook"),
        el("dd", { title: job.webhook.last_error || (job.webhook.last_status ? `HTTP ${job.webhook.last_status}` : "") },
          webhookText(job.webhook))) : null);
    const visual = job.state === "succeeded" && job.images.length > 0 ? imageElement(job) : placeholder(job);
    const item = el("li", { className: `card job state-${job.state}`, "data-job-id": job.id, "data-state": job.state },
      el("figure", { className: "job-figure" }, visual,
        el("figcaption", {},
          el("p", { className: "prompt" }, request.prompt || `(${request.workflow || "graph"})`),
          el("p", { className: "job-meta" },
            el("span", { className: `badge badge-${job.state}` }, job.state),
            job.category ? el("span", { className: "category-text" }, job.category) : null,
            request.style ? el("span", { className: "style" }, request.style) : null,
            el("span", { className: "workflow" }, request.workflow || "")),
          details,
          job.error && job.state !== "succeeded" ? el("p", { className: "job-error" }, job.error) : null)));
    return item;
  }

  function webhookText(hook) {
    // "delivered", "pending (2 tries, last 500)", "failed (8 tries, last 302)", "waiting"...
    if (hook.attempts === 0) return hook.state;
    const last = hook.last_status ? `, last ${hook.last_status}` : hook.last_error ? ", no answer" : "";
    const tries = `${hook.attempts} ${hook.attempts === 1 ? "try" : "tries"}`;
    return hook.state === "delivered" && hook.attempts === 1 ? "delivered" : `${hook.state} (${tries}${last})`;
  }

  function renderJobs(data) {
    const jobs = (data.jobs || []).slice(0, JOBS_SHOWN);
    const list = $("jobs");
    const seen = new Set();
    const keepImages = new Set();
    jobs.forEach((job) => {
      seen.add(job.id);
      job.images.forEach((url) => keepImages.add(url));
      const signature = jobSignature(job);
      let card = jobCards.get(job.id);
      if (!card || card.signature !== signature) {
        const element = jobCard(job);
        if (card) card.element.replaceWith(element);
        card = { signature, element };
        jobCards.set(job.id, card);
      }
      list.append(card.element); // appending an attached node moves it: keeps the API's order
    });
    for (const [id, card] of jobCards) {
      if (!seen.has(id)) { card.element.remove(); jobCards.delete(id); }
    }
    forgetThumbnails(keepImages);
    const empty = list.querySelector(".empty");
    if (jobs.length === 0 && !empty) list.append(el("li", { className: "empty muted" }, "No jobs yet."));
    if (jobs.length > 0 && empty) empty.remove();
  }

  // ------------------------------------------------------------------ the loop

  async function poll() {
    clearTimeout(timer);
    if (waitingForToken) return;
    try {
      const [instances, jobs, hosts] = await Promise.all(
        [api("/v1/instances"), api(`/v1/jobs?limit=${JOBS_SHOWN}`), api("/v1/hosts")]);
      renderHosts(hosts);
      renderInstances(instances);
      renderJobs(jobs);
      $("forget-token").hidden = !token;
      document.body.dataset.loaded = "true";
      setStatus(`Updated ${new Date().toLocaleTimeString()}`, "ok");
    } catch (error) {
      if (error instanceof Unauthorized) {
        const rejected = Boolean(token);
        token = null;
        sessionStorage.removeItem(TOKEN_KEY);
        askForToken(rejected);
        return;
      }
      setStatus(`Cannot reach the supervisor (${error.message}); retrying`, "error");
    }
    timer = setTimeout(poll, POLL_MS);
  }

  function start() {
    readTokenFromUrl();
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = $("token-input").value.trim();
      $("token-input").value = "";
      if (value) useToken(value);
    });
    $("forget-token").addEventListener("click", () => {
      token = null;
      sessionStorage.removeItem(TOKEN_KEY);
      clearThumbnails();
      poll();
    });
    poll();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
