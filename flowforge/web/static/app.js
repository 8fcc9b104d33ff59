// FlowForge dashboard: the runs list, one run (live), and the workflows, drawn from the
// JSON API. Plain JavaScript, no library; the DAG is inline SVG. Text always goes into the
// page as text nodes, never as HTML.
"use strict";
(() => {
  // A ?token= link set the token cookie with this page (HttpOnly, SameSite=Strict): take the
  // token out of the address bar, so it stays out of history; API calls send it as a header
  const TOKEN = new URLSearchParams(location.search).get("token");
  if (TOKEN) {
    const here = new URL(location.href);
    here.searchParams.delete("token");
    history.replaceState(null, "", here.pathname + here.search + here.hash);
  }
  const STATES = ["pending", "waiting", "running", "retrying", "succeeded", "failed",
                  "skipped", "cancelled"];
  const main = document.getElementById("main");
  let cleanup = [];

  // -- helpers ---------------------------------------------------------------------------

  async function api(path, options = {}) {
    const headers = Object.assign({ Accept: "application/json" }, options.headers || {});
    if (TOKEN) headers.Authorization = "Bearer " + TOKEN;
    // the page says Referrer-Policy: no-referrer, under which the Fetch standard sends
    // "Origin: null" on a POST; same-origin keeps the page's origin, which the server checks
    const response = await fetch("/api/v1" + path, Object.assign(
      { referrerPolicy: "same-origin", credentials: "same-origin" }, options, { headers }));
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
      throw new Error(detail || response.status + " " + response.statusText);
    }
    return body;
  }

  function h(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    append(node, children);
    return node;
  }

  function append(node, children) {
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }

  const SVG = "http://www.w3.org/2000/svg";
  function s(tag, attrs = {}, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
    append(node, children);
    return node;
  }

  function link(path, text) {
    return h("a", { href: path, "data-link": true }, text);
  }

  function badge(state) {
    return h("span", { class: "state state-" + state }, state);
  }

  function when(seconds) {
    if (seconds === null || seconds === undefined) return "";
    return new Date(seconds * 1000).toLocaleString();
  }

  function secs(value) {
    if (value === null || value === undefined) return "";
    if (value < 0.001) return "<1 ms";
    if (value < 1) return (value * 1000).toFixed(0) + " ms";
    if (value < 120) return value.toFixed(2) + " s";
    return (value / 60).toFixed(1) + " min";
  }

  function fill(node, ...children) {
    node.replaceChildren();
    append(node, children);
    return node;
  }

  function show(...children) {
    fill(main, ...children);
  }

  function failure(error) {
    show(h("div", { class: "error-box" }, String(error.message || error)));
  }

  function every(ms, fn) {
    const id = setInterval(() => { if (!document.hidden) fn(); }, ms);
    cleanup.push(() => clearInterval(id));
  }

  // -- routing -----------------------------------------------------------------------------

  function route() {
    for (const undo of cleanup.splice(0)) undo();
    const path = location.pathname;
    for (const a of document.querySelectorAll("[data-nav]")) {
      a.classList.toggle("active", path.startsWith("/" + a.dataset.nav));
    }
    const run = path.match(/^\/runs\/([^/]+)$/);
    if (run) return runPage(decodeURIComponent(run[1]));
    if (path.startsWith("/workflows")) return workflowsPage();
    return runsPage();
  }

  document.addEventListener("click", (event) => {
    const a = event.target.closest && event.target.closest("a[data-link]");
    if (!a || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
    const url = new URL(a.href, location.href);
    if (url.origin !== location.origin) return;
    event.preventDefault();
    history.pushState(null, "", url.pathname + keepQuery(url));
    route();
  });
  window.addEventListener("popstate", route);

  function keepQuery(url) {
    const q = new URLSearchParams(url.search);
    q.delete("token");
    const text = q.toString();
    return text ? "?" + text : "";
  }

  // -- runs ----------------------------------------------------------------------------------

  function runsPage() {
    const query = new URLSearchParams(location.search);
    const filters = { workflow: query.get("workflow") || "", status: query.get("status") || "",
                      offset: Number(query.get("offset") || 0) };
    const limit = 25;
    const workflowSelect = h("select", { name: "workflow" }, h("option", { value: "" }, "all"));
    const statusSelect = h("select", { name: "status" }, h("option", { value: "" }, "all"),
      ["running", "succeeded", "failed", "cancelled", "interrupted", "unreadable"].map(
        (st) => h("option", { value: st, selected: st === filters.status }, st)));
    const body = h("tbody");
    const info = h("span", { class: "muted" });
    const newer = h("button", { class: "secondary", onclick: () => page(-limit) }, "Newer");
    const older = h("button", { class: "secondary", onclick: () => page(limit) }, "Older");
    const change = () => {
      filters.workflow = workflowSelect.value;
      filters.status = statusSelect.value;
      filters.offset = 0;
      load();
    };
    workflowSelect.addEventListener("change", change);
    statusSelect.addEventListener("change", change);
    show(
      h("h1", {}, "Runs"),
      h("div", { class: "filters" },
        h("label", {}, "Workflow", workflowSelect), h("label", {}, "Status", statusSelect)),
      h("table", { id: "runs" },
        h("thead", {}, h("tr", {}, ["Run", "Workflow", "Status", "Started", "Duration",
                                      "Tasks"].map((t) => h("th", {}, t)))),
        body),
      h("div", { class: "pager" }, newer, older, info),
    );

    function page(delta) {
      filters.offset = Math.max(0, filters.offset + delta);
      load();
    }

    async function load() {
      const q = new URLSearchParams({ limit, offset: filters.offset });
      if (filters.workflow) q.set("workflow", filters.workflow);
      if (filters.status) q.set("status", filters.status);
      const shown = new URLSearchParams(q);
      shown.delete("limit");
      if (!filters.offset) shown.delete("offset");
      history.replaceState(null, "", "/runs" + (shown.toString() ? "?" + shown : ""));
      let data;
      try {
        data = await api("/runs?" + q);
      } catch (error) {
        return failure(error);
      }
      const known = new Set([...workflowSelect.options].map((o) => o.value));
      for (const name of data.workflows) {
        if (!known.has(name)) workflowSelect.appendChild(h("option", { value: name }, name));
      }
      workflowSelect.value = filters.workflow;
      body.replaceChildren();
      for (const run of data.runs) {
        body.appendChild(h("tr", { dataset: { run: run.run_id } },
          h("td", {}, link("/runs/" + encodeURIComponent(run.run_id), run.run_id)),
          h("td", {}, run.workflow),
          h("td", {}, badge(run.status)),
          h("td", {}, when(run.started)),
          h("td", { class: "num" }, secs(run.duration)),
          run.reason ? h("td", { class: "muted small" }, run.reason)
            : h("td", {}, `${run.succeeded}/${run.total} ok` + (run.failed ? `, ${run.failed} failed` : "")
                          + (run.restored ? `, ${run.restored} restored` : ""))));
      }
      if (!data.runs.length) {
        body.appendChild(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No runs yet.")));
      }
      const last = Math.min(data.total, filters.offset + data.runs.length);
      info.textContent = data.total ? `${filters.offset + 1}–${last} of ${data.total}` : "";
      newer.disabled = filters.offset === 0;
      older.disabled = last >= data.total;
    }

    load();
    every(3000, load);
  }

  // -- one run -------------------------------------------------------------------------------

  function runPage(runId) {
    const state = { tasks: new Map(), run: null, source: null };
    const head = h("div", { class: "run-head" });
    const facts = h("div", { class: "facts" });
    const graphBox = h("div", { class: "graph", id: "graph" });
    const graphNote = h("div", { class: "note" });
    const taskBody = h("tbody");
    const logBox = h("pre", { class: "log", id: "log" }, "");
    show(head, facts,
      h("h2", {}, "Graph"), h("div", { class: "legend" }, STATES.map(badge)), graphBox, graphNote,
      h("h2", {}, "Tasks"),
      h("table", { id: "tasks" }, h("thead", {}, h("tr", {},
        ["Task", "State", "Attempts", "Duration", "Error"].map((t) => h("th", {}, t)))), taskBody),
      h("h2", {}, "Log"), logBox);

    async function load() {
      let view;
      try {
        view = await api("/runs/" + encodeURIComponent(runId));
      } catch (error) {
        return failure(error);
      }
      state.run = view.run;
      drawHead();
      drawGraph(view.graph);
      state.tasks = new Map(view.tasks.map((t) => [t.name, t]));
      drawTasks();
      loadLog();
      if (view.run.status === "running") follow();
    }

    function drawHead() {
      const run = state.run;
      const cancel = run.status === "running"
        ? h("button", { class: "danger", id: "cancel", onclick: cancelRun }, "Cancel run") : null;
      fill(head, h("h1", {}, run.workflow + " · " + run.run_id),
           h("span", { id: "run-status" }, badge(run.status)), cancel);
      fill(facts,
        h("span", {}, "started ", h("b", {}, when(run.started))),
        h("span", {}, "duration ", h("b", {}, run.duration === null ? "…" : secs(run.duration))),
        h("span", {}, "tasks ", h("b", {}, `${run.succeeded}/${run.total} ok, ${run.failed} failed, `
                                          + `${run.skipped} skipped`)),
        run.reason ? h("span", { id: "run-reason" }, "unreadable: ", h("b", {}, run.reason)) : null,
        run.params ? h("span", {}, "params ", h("b", {}, JSON.stringify(run.params))) : null,
        run.job ? h("span", {}, "job ", h("b", {}, run.job)) : null);
    }

    async function cancelRun(event) {
      event.target.disabled = true;
      try {
        await api("/runs/" + encodeURIComponent(runId) + "/cancel", { method: "POST" });
      } catch (error) {
        event.target.disabled = false;
        alert(error.message);
      }
    }

    function drawGraph(graph) {
      graphBox.replaceChildren();
      graphNote.textContent = graph && graph.note ? graph.note : "";
      if (!graph || !graph.nodes.length) return;
      const W = 170, H = 30, GX = 60, GY = 14, PAD = 14;
      const at = new Map(graph.nodes.map((n) => [n.name, {
        x: PAD + n.layer * (W + GX), y: PAD + n.row * (H + GY) }]));
      const width = Math.max(...[...at.values()].map((p) => p.x)) + W + PAD;
      const height = Math.max(...[...at.values()].map((p) => p.y)) + H + PAD;
      const svg = s("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
                             "aria-label": "the run's DAG" });
      svg.appendChild(s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9,
        refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
        s("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#9aa3b2" }))));
      for (const [from, to] of graph.edges) {
        const a = at.get(from), b = at.get(to);
        if (!a || !b) continue;
        const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mid = (x1 + x2) / 2;
        svg.appendChild(s("path", { class: "edge", "marker-end": "url(#arrow)",
          d: `M ${x1} ${y1} C ${mid} ${y1}, ${mid} ${y2}, ${x2 - 2} ${y2}` }));
      }
      for (const node of graph.nodes) {
        const p = at.get(node.name);
        const task = state.tasks.get(node.name);
        const label = node.name.length > 22 ? node.name.slice(0, 21) + "…" : node.name;
        svg.appendChild(s("g", { class: "node state-" + (task ? task.state : "pending"),
                                 "data-task": node.name, transform: `translate(${p.x},${p.y})` },
          s("title", {}, node.name),
          s("rect", { width: W, height: H, rx: 6, ry: 6 }),
          s("text", { x: 10, y: H / 2 + 4 }, label)));
      }
      graphBox.appendChild(svg);
    }

    function drawTasks() {
      taskBody.replaceChildren();
      for (const task of state.tasks.values()) taskBody.appendChild(taskRow(task));
      recolour();
    }

    function taskRow(task) {
      const error = task.error ? [h("div", {}, task.error)] : [];
      for (const f of task.failures || []) {
        if (!f.traceback) continue;
        error.push(h("details", {}, h("summary", {},
          `traceback, attempt ${f.attempt}` + (f.will_retry ? " (retried)" : "")),
          h("pre", {}, f.traceback)));
      }
      if (task.reason && !task.error) error.push(h("div", { class: "muted" }, task.reason));
      return h("tr", { dataset: { task: task.name } },
        h("td", {}, task.name),
        h("td", { class: "state-cell" }, badge(task.state)),
        h("td", { class: "num" }, String(task.attempts || 0)),
        h("td", { class: "num" }, secs(task.duration)),
        h("td", { class: "error" }, error));
    }

    function update(task) {
      const old = state.tasks.get(task.name) || { name: task.name, failures: [] };
      const merged = Object.assign({}, old, task, { failures: task.failures || old.failures });
      state.tasks.set(task.name, merged);
      const row = taskBody.querySelector(`tr[data-task="${CSS.escape(task.name)}"]`);
      if (row) row.replaceWith(taskRow(merged));
      else taskBody.appendChild(taskRow(merged));
      recolour(`g.node[data-task="${CSS.escape(task.name)}"]`);  // this task's node only
    }

    function recolour(nodes = "g.node") {
      for (const g of graphBox.querySelectorAll(nodes)) {
        const task = state.tasks.get(g.dataset.task);
        g.setAttribute("class", "node state-" + (task ? task.state : "pending"));
      }
    }

    function fromEvent(msg) {
      const task = { name: msg.task, state: msg.state };
      if (msg.attempt) task.attempts = msg.attempt;
      if (msg.duration !== undefined && msg.duration !== null) task.duration = msg.duration;
      if (msg.error) task.error = msg.error;
      if (msg.reason) task.reason = msg.reason;
      return task;
    }

    function follow() {
      if (state.source) return;
      const source = new EventSource(`/api/v1/runs/${encodeURIComponent(runId)}/events`);
      state.source = source;
      cleanup.push(() => source.close());
      source.addEventListener("snapshot", (e) => {
        const view = JSON.parse(e.data);
        for (const task of view.tasks) update(task);
      });
      source.addEventListener("task", (e) => {
        const msg = JSON.parse(e.data);
        if (msg.index === null || msg.index === undefined) update(fromEvent(msg));
      });
      source.addEventListener("run", (e) => {
        source.close();
        state.source = null;
        const view = JSON.parse(e.data);
        if (!view.run) return failure(new Error("the run was deleted"));
        state.run = view.run;
        drawHead();
        for (const task of view.tasks) update(task);
        load();  // the tracebacks and the log of the finished run
      });
    }

    async function loadLog() {
      try {
        const logs = await api("/runs/" + encodeURIComponent(runId) + "/logs?limit=500");
        logBox.replaceChildren();
        if (!logs.lines.length) {
          logBox.textContent = logs.file ? "(no lines for this run in " + logs.file + ")" : "(no log file)";
        }
        for (const line of logs.lines) {
          const { timestamp, level, event, task, workflow, run_id, traceback, ...rest } = line;
          const extras = Object.entries(rest).map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`);
          logBox.appendChild(h("div", { class: level || "info" },
            [String(timestamp || "").slice(11, 23), (level || "").padEnd(7), task ? `${task}:` : "",
             event, ...extras].filter(Boolean).join(" ")));
        }
      } catch (error) {
        logBox.textContent = String(error.message || error);
      }
    }

    load();
    every(5000, () => { if (state.source) loadLog(); });
  }

  // -- workflows ------------------------------------------------------------------------------

  async function workflowsPage() {
    show(h("h1", {}, "Workflows"), h("p", { class: "muted" }, "Loading…"));
    let views;
    try {
      views = await api("/workflows");
    } catch (error) {
      return failure(error);
    }
    const cards = h("div", { class: "cards" });
    show(h("h1", {}, "Workflows"), views.length ? cards
      : h("p", { class: "muted" }, "No workflows yet: run one, or start flowforge ui with its file."));
    for (const wf of views) cards.appendChild(card(wf));
  }

  function card(wf) {
    const rate = wf.success_rate === null ? "–" : (wf.success_rate * 100).toFixed(0) + "%";
    const runs = h("table", {}, h("tbody", {}, wf.last_runs.map((r) => h("tr", {},
      h("td", {}, link("/runs/" + encodeURIComponent(r.run_id), r.run_id)),
      h("td", {}, badge(r.status)), h("td", { class: "num" }, secs(r.duration))))));
    const schedules = wf.schedules.length
      ? h("table", {}, h("thead", {}, h("tr", {}, ["Job", "Schedule", "Next run", "Last"].map((t) => h("th", {}, t)))),
          h("tbody", {}, wf.schedules.map((j) => h("tr", {},
            h("td", {}, j.job + (j.enabled ? "" : " (paused)")),
            h("td", {}, j.schedule || ""),
            h("td", {}, j.next_run ? new Date(j.next_run).toLocaleString() : "–"),
            h("td", {}, j.last_status ? badge(j.last_status) : "–")))))
      : h("p", { class: "muted small" }, "Not scheduled.");
    return h("section", { class: "panel card", dataset: { workflow: wf.name } },
      h("h2", {}, wf.name),
      h("div", { class: "facts" },
        h("span", {}, "success rate ", h("b", { class: "rate" }, rate)),
        h("span", {}, "runs ", h("b", {}, String(wf.runs)))),
      h("div", { class: "small muted" }, "Duration of recent runs"), sparkline(wf.durations),
      h("h2", {}, "Last runs"), wf.last_runs.length ? runs : h("p", { class: "muted small" }, "None yet."),
      h("h2", {}, "Schedule"), schedules,
      wf.startable ? startForm(wf) : null);
  }

  function sparkline(points) {
    const W = 380, H = 48;
    const svg = s("svg", { class: "spark", width: W, height: H, viewBox: `0 0 ${W} ${H}`,
                           role: "img", "aria-label": "durations of recent runs" });
    if (!points.length) return svg;
    const max = Math.max(...points.map((p) => p.duration), 1e-9);
    const step = W / Math.max(points.length, 10);
    points.forEach((p, i) => {
      const bar = Math.max(2, (p.duration / max) * (H - 4));
      svg.appendChild(s("rect", { class: p.status, x: i * step + 1, y: H - bar,
                                  width: Math.max(2, step - 2), height: bar },
        s("title", {}, `${p.run_id}: ${secs(p.duration)} (${p.status})`)));
    });
    return svg;
  }

  function startForm(wf) {
    const params = h("textarea", { rows: 3, cols: 40, "aria-label": "params as JSON" },
                     JSON.stringify(wf.params || {}, null, 0));
    const out = h("div", { class: "small" });
    const button = h("button", { onclick: start }, "Start a run");
    async function start() {
      let body;
      try {
        body = { params: JSON.parse(params.value || "{}") };
      } catch (error) {
        out.textContent = "params must be a JSON object: " + error.message;
        return;
      }
      button.disabled = true;
      try {
        const answer = await api(`/workflows/${encodeURIComponent(wf.name)}/runs`, {
          method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" } });
        if (answer.run_id) {
          history.pushState(null, "", "/runs/" + encodeURIComponent(answer.run_id));
          route();
        } else {
          out.textContent = `started in process ${answer.pid}`;
        }
      } catch (error) {
        out.textContent = error.message;
      } finally {
        button.disabled = false;
      }
    }
    return h("div", {}, h("h2", {}, "Start"), params, h("div", {}, button), out);
  }

  route();
})();
