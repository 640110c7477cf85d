// Episode gallery and "same episode across N" view. Data comes from the JSON block #episodes-data;
// everything from files is written with textContent (never innerHTML). Cards are built one page at a
// time and videos get their src only when scrolled into view, so 7,500 episodes stay responsive.
(function () {
  "use strict";
  const PAGE = 24;
  const raw = JSON.parse(document.getElementById("episodes-data").textContent);
  const F = Object.fromEntries(raw.fields.map((f, i) => [f, i]));
  const eps = raw.rows.map((r) => Object.fromEntries(raw.fields.map((f) => [f, r[F[f]]])));
  const uniq = (xs) => Array.from(new Set(xs));
  const words = (t) => String(t).replace(/_/g, " ");  // LIBERO names use underscores
  const runs = uniq(eps.map((e) => e.run));
  const tasks = uniq(eps.map((e) => e.task)).sort();
  const ns = uniq(eps.map((e) => e.flow_steps)).sort((a, b) => a - b);
  const outcomes = ["success", "failure", "error"];
  const state = { run: runs[0], task: "", n: new Set(ns), outcome: new Set(outcomes), page: 0 };
  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = String(text);
    return e;
  };

  const observer = "IntersectionObserver" in window ? new IntersectionObserver((entries) => {
    for (const en of entries) {
      if (!en.isIntersecting) continue;
      const v = en.target;
      v.preload = "metadata";
      v.src = v.dataset.src;
      observer.unobserve(v);
    }
  }, { rootMargin: "200px" }) : null;

  function videoEl(ep) {
    if (!ep.video) return el("div", "novideo", "no video");
    const v = el("video");
    v.controls = true; v.muted = true; v.playsInline = true; v.preload = "none"; v.loop = true;
    v.dataset.src = ep.video;
    if (ep.poster) v.poster = ep.poster;  // the last frame: the outcome is visible before playing
    if (observer) observer.observe(v); else v.src = ep.video;
    return v;
  }

  function card(ep, withLink) {
    const c = el("div", "ep " + ep.outcome);
    c.dataset.key = [ep.run, ep.task, ep.init_state, ep.seed].join("\u0001");
    c.appendChild(videoEl(ep));
    const m = el("div", "meta");
    const t = el("div", "t", words(ep.task)); t.title = ep.task; m.appendChild(t);
    const row = el("div", "row");
    const badge = ep.outcome === "error" ? ep.status : ep.outcome;
    row.appendChild(el("span", "badge", badge));
    row.appendChild(el("span", "", "N=" + ep.flow_steps));
    row.appendChild(el("span", "", "init " + ep.init_state));
    row.appendChild(el("span", "", "seed " + ep.seed));
    row.appendChild(el("span", "", ep.steps >= 0 ? ep.steps + " steps" : "– steps"));
    row.appendChild(el("span", "", ep.policy_ms_p50 === null ? "– ms" : ep.policy_ms_p50 + " ms p50"));
    if (runs.length > 1) row.appendChild(el("span", "", ep.run));
    m.appendChild(row);
    if (ep.error) m.appendChild(el("div", "errmsg", ep.error));
    if (withLink) {
      const a = el("a", "x", "compare across N →");
      a.addEventListener("click", () => { selectAcross(c.dataset.key); $("across").scrollIntoView(); });
      m.appendChild(a);
    }
    c.appendChild(m);
    return c;
  }

  function filtered() {
    return eps.filter((e) => e.run === state.run && (!state.task || e.task === state.task) &&
      state.n.has(e.flow_steps) && state.outcome.has(e.outcome));
  }

  function renderGallery() {
    const list = filtered();
    const pages = Math.max(1, Math.ceil(list.length / PAGE));
    state.page = Math.min(state.page, pages - 1);
    const box = $("cards");
    box.querySelectorAll("video").forEach((v) => observer && observer.unobserve(v));
    box.replaceChildren(...list.slice(state.page * PAGE, (state.page + 1) * PAGE).map((e) => card(e, true)));
    $("count").textContent = list.length + " of " + eps.filter((e) => e.run === state.run).length + " episodes";
    $("page").textContent = "page " + (state.page + 1) + " / " + pages;
    $("prev").disabled = state.page === 0;
    $("next").disabled = state.page >= pages - 1;
  }

  function toggles(boxId, values, set, label) {
    const box = $(boxId);
    for (const val of values) {
      const b = el("button", "on", label(val));
      b.dataset.value = String(val);
      b.addEventListener("click", () => {
        if (set.has(val)) set.delete(val); else set.add(val);
        b.classList.toggle("on", set.has(val));
        state.page = 0; renderGallery();
      });
      box.appendChild(b);
    }
  }

  function options(select, values, label) {
    select.replaceChildren(...values.map((v) => { const o = el("option", "", label(v)); o.value = v; return o; }));
  }

  // --- same (task, init_state, seed) across all N ---
  const keys = uniq(eps.map((e) => [e.run, e.task, e.init_state, e.seed].join("\u0001")));
  function keyLabel(k) {
    const [run, task, init, seed] = k.split("\u0001");
    return (runs.length > 1 ? run + " · " : "") + words(task) + " · init " + init + " · seed " + seed;
  }
  function selectAcross(k) {
    $("x-key").value = k;
    const group = eps.filter((e) => [e.run, e.task, e.init_state, e.seed].join("\u0001") === k)
      .sort((a, b) => a.flow_steps - b.flow_steps);
    $("across-cards").replaceChildren(...group.map((e) => card(e, false)));
  }

  function init() {
    if (runs.length < 2) $("run-filter-wrap").style.display = "none";
    options($("f-run"), runs, (r) => r);
    options($("f-task"), [""].concat(tasks), (t) => (t ? words(t) : "all tasks"));
    $("f-run").addEventListener("change", (ev) => { state.run = ev.target.value; state.page = 0; renderGallery(); });
    $("f-task").addEventListener("change", (ev) => { state.task = ev.target.value; state.page = 0; renderGallery(); });
    toggles("f-n", ns, state.n, (n) => "N=" + n);
    toggles("f-outcome", outcomes, state.outcome, (o) => o);
    $("prev").addEventListener("click", () => { state.page--; renderGallery(); });
    $("next").addEventListener("click", () => { state.page++; renderGallery(); });
    options($("x-key"), keys, keyLabel);
    $("x-key").addEventListener("change", (ev) => selectAcross(ev.target.value));
    $("x-play").addEventListener("click", () => {
      $("across-cards").querySelectorAll("video").forEach((v) => {
        if (!v.src) { v.src = v.dataset.src; }
        v.currentTime = 0; v.play().catch(() => {});
      });
    });
    renderGallery();
    if (keys.length) selectAcross(keys[0]);
  }
  init();
})();
