// instructune studio: charts (uPlot), live run updates, chat streaming, launch progress.
// Data is only ever put in the page with textContent, never as markup.
"use strict";

const COLORS = ["#1a5fd0", "#d9480f", "#2b8a3e", "#862e9c", "#c2255c", "#087f8c"];
const POLL_MS = 1500;

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

async function postJSON(url, body) {
  const response = await fetch(url, {
    method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(typeof data.error === "string" ? data.error : (data.error && data.error.message) || response.statusText);
  return data;
}

// ------------------------------------------------------------------ runs: curves, live

function initCharts(root) {
  const curves = JSON.parse(root.dataset.curves);
  const runs = [...document.querySelectorAll(".runlist li")].map((li) => li.dataset.run);
  const plots = {};
  const seen = {};

  function build(title, keys, results) {
    const tables = [];
    const series = [{label: "step"}];
    results.forEach((res, i) => {
      const cols = res.columns;
      const step = cols.step || [];
      const ys = keys.filter((k) => cols[k] && cols[k].some((v) => v !== null));
      if (!step.length || !ys.length) return;
      tables.push([step, ...ys.map((k) => cols[k])]);
      // one color per run when comparing (a dashed line for its second series), else per key
      ys.forEach((k, j) => series.push({
        label: runs.length > 1 ? `${runs[i]} ${k}` : k,
        stroke: COLORS[(runs.length > 1 ? i : keys.indexOf(k)) % COLORS.length],
        width: 1.5,
        spanGaps: true,
        points: {show: k.startsWith("eval_")},
        dash: runs.length > 1 && keys.indexOf(k) > 0 ? [6, 3] : undefined,
      }));
    });
    if (!tables.length) return null;
    return {data: tables.length === 1 ? tables[0] : uPlot.join(tables), series};
  }

  async function refresh() {
    const results = await Promise.all(runs.map((run) =>
      fetch(`/api/metrics?path=${encodeURIComponent(run)}`).then((r) => (r.ok ? r.json() : {columns: {}, rows: 0}))));
    let changed = false;
    results.forEach((res, i) => {
      if (seen[runs[i]] !== res.rows) changed = true;
      seen[runs[i]] = res.rows;
      const status = document.querySelector(`[data-status-for="${CSS.escape(runs[i])}"]`);
      if (status) {
        const steps = res.columns.step || [];
        const last = steps.length ? steps[steps.length - 1] : "-";
        const note = res.downsampled_from ? `, shown as ${steps.length} points` : "";
        status.textContent = `· ${res.rows} records${note} · last step ${last}`;
        status.dataset.lastStep = String(last);
      }
    });
    if (!changed) return;
    for (const section of root.querySelectorAll(".chart")) {
      const title = section.dataset.title;
      const built = build(title, curves[title], results);
      const box = section.querySelector(".plot");
      if (!built) { section.hidden = true; continue; }
      section.hidden = false;
      const old = plots[title];
      if (old && old.series.length === built.series.length) { old.setData(built.data); continue; }
      if (old) old.destroy();
      box.textContent = "";
      plots[title] = new uPlot({width: 560, height: 240, series: built.series, scales: {x: {time: false}},
        axes: [{label: "step"}, {}]}, built.data, box);
    }
  }
  refresh();
  setInterval(refresh, POLL_MS);
}

// ------------------------------------------------------------------ chat

function initChat() {
  const $ = (id) => document.getElementById(id);
  let key = null;
  const history = [];

  $("chat-load").addEventListener("click", async () => {
    const adapters = [...$("chat-adapters").selectedOptions].map((o) => o.value).filter((a) => a !== $("chat-run").value);
    $("chat-status").textContent = "loading…";
    try {
      const res = await postJSON("/api/chat/load", {run: $("chat-run").value, adapters});
      key = res.key;
      $("chat-model").textContent = "";
      for (const m of res.models) $("chat-model").append(el("option", {}, m));
      $("chat-status").textContent = `loaded: ${res.models.join(", ")}`;
      $("chat-send").disabled = false;
      $("chat-show-prompt").disabled = false;
    } catch (err) {
      $("chat-status").textContent = `error: ${err.message}`;
    }
  });

  function messages(extra) {
    const system = $("chat-system").value.trim();
    return [...(system ? [{role: "system", content: system}] : []), ...history, ...extra];
  }

  $("chat-show-prompt").addEventListener("click", async () => {
    const text = $("chat-input").value;
    const res = await postJSON("/api/chat/render", {key, messages: messages(text ? [{role: "user", content: text}] : [])});
    $("chat-prompt").hidden = false;
    $("chat-prompt").textContent = res.prompt;
  });

  $("chat-send").addEventListener("click", async () => {
    const text = $("chat-input").value;
    if (!text || !key) return;
    const turn = {role: "user", content: text};
    $("chat-log").append(el("div", {class: "msg user"}, text));
    const answer = el("div", {class: "msg assistant streaming"}, "");
    $("chat-log").append(answer);
    $("chat-input").value = "";
    $("chat-send").disabled = true;
    const body = {
      model: $("chat-model").value, messages: messages([turn]), stream: true,
      temperature: Number($("chat-temperature").value), top_p: Number($("chat-top-p").value),
      max_tokens: Number($("chat-max-tokens").value),
    };
    if ($("chat-seed").value !== "") body.seed = Number($("chat-seed").value);
    try {
      const response = await fetch(`/engine/${key}/v1/chat/completions`, {
        method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
      if (!response.ok) throw new Error((await response.json()).error.message);
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      let chunks = 0;
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, {stream: true});
        const events = buffer.split("\n\n");
        buffer = events.pop();
        for (const event of events) {
          const data = event.replace(/^data: /, "");
          if (data === "[DONE]") continue;
          const parsed = JSON.parse(data);
          if (parsed.error) throw new Error(parsed.error.message);
          const delta = parsed.choices[0].delta.content;
          if (delta) { answer.textContent += delta; chunks += 1; answer.dataset.chunks = String(chunks); }
        }
      }
      history.push(turn, {role: "assistant", content: answer.textContent});
    } catch (err) {
      answer.textContent += ` [error: ${err.message}]`;
    } finally {
      answer.classList.remove("streaming");
      answer.classList.add("done");
      $("chat-send").disabled = false;
    }
  });
}

// ------------------------------------------------------------------ launch

function initLaunch() {
  const $ = (id) => document.getElementById(id);
  const wanted = new URLSearchParams(location.search).get("config");
  if (wanted) $("launch-config").value = wanted;
  const boxes = {};

  function show(job) {
    let box = boxes[job.id];
    if (!box) {
      box = el("div", {class: "job", "data-job": String(job.id)});
      box.append(el("b", {}, `#${job.id} ${job.command} ${job.config}`), el("span", {class: "state"}, ""), el("button", {}, "stop"), el("pre", {}, ""));
      box.querySelector("button").addEventListener("click", () => postJSON(`/api/jobs/${job.id}/stop`, {}));
      $("jobs").prepend(box);
      boxes[job.id] = box;
    }
    const state = job.running ? "running" : `finished (exit ${job.returncode})`;
    box.querySelector(".state").textContent = ` · ${state}${job.stopped ? " · stop requested" : ""} `;
    box.dataset.state = job.running ? "running" : "finished";
    box.dataset.returncode = String(job.returncode);
    box.querySelector("button").disabled = !job.running;
    box.querySelector("pre").textContent = job.log;
  }

  async function poll() {
    const jobs = await fetch("/api/jobs").then((r) => r.json());
    jobs.forEach(show);
  }

  $("launch-start").addEventListener("click", async () => {
    $("launch-error").hidden = true;
    try {
      show(await postJSON("/api/launch", {command: $("launch-command").value, config: $("launch-config").value, dump: $("launch-dump").checked}));
    } catch (err) {
      $("launch-error").hidden = false;
      $("launch-error").textContent = err.message;
    }
  });
  poll();
  setInterval(poll, 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  const charts = document.getElementById("charts");
  if (charts) initCharts(charts);
  if (document.getElementById("chat-send")) initChat();
  if (document.getElementById("launch-start")) initLaunch();
});
