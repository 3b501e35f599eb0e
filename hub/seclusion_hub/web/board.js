// The live board: rooms, open episodes with running clocks, and active alerts, kept up to date by the
// hub's live stream (/api/live, Server-Sent Events). Plain JavaScript, no build step, nothing from
// elsewhere. Every piece of data is put on the page as text (textContent), never as HTML.
"use strict";

(() => {
  const SEVERITY = { critical: "Critical", warning: "Warning", info: "Information" };
  const SEVERITY_ORDER = { critical: 0, warning: 1, info: 2 };
  const KIND = {
    episode_started: "A child is in a closed room",
    supervision_lapse: "Nobody at the viewing panel",
    duration_warning: "Time in the room is getting long",
    duration_escalation: "Time in the room: escalated",
    duration_limit: "Time limit in the room reached",
    review_due: "A review of the time in the room is due",
    no_movement: "No movement seen in the room",
    lock_forbidden: "Door locked where locking is not allowed",
    seclusion_prohibited: "A child in a closed room where seclusion is not allowed",
    device_offline: "A room sensor is offline",
    sensor_fault: "A room sensor reports a fault",
    clock_skew: "A room sensor's clock is wrong",
    report_overdue: "The written record is overdue",
  };
  // A record's overdue alert is raised for each step on its own deadline (its `rule`): name the step.
  const REPORT_STEP = {
    record: "The record is overdue",
    parent_notice: "The parents have not yet been told",
    parent_copy: "The parents' written copy is overdue",
    authority_notice: "The report to the authority is overdue",
  };
  const TIER = {
    room: "Room staff",
    senior: "Senior staff",
    dsl: "Safeguarding lead",
    head: "Head teacher",
  };
  const READINGS = {
    door: { open: "Open", closed: "Closed" },
    lock: { engaged: "Locked", released: "Not locked" },
    occupancy: { occupied: "Child in room", vacant: "Empty" },
    observer: { present: "Staff at the viewing panel", absent: "Nobody at the viewing panel" },
  };
  const SUPERVISION_MODE = {
    observer: "Observer at the viewing panel",
    checkin: "Regular check-ins",
    both: "Observer and check-ins",
  };
  const RECONNECT_MAX_MS = 30000;
  const RESYNC_EVERY_MS = 60000;
  const BEEP_EVERY_MS = 2000;
  const SILENT_KEEPALIVES = 2.5; // keep-alives missed before the stream counts as lost
  const FETCH_TIMEOUT_MS = 15000; // a request the hub does not answer in this time has failed

  const rooms = new Map(); // "site/room" -> room
  const alerts = new Map(); // id -> alert
  let offsetMs = 0; // the hub's clock minus this browser's, from `hello`
  let source = null;
  let generation = 0; // which `hello` the current resync belongs to
  let buffered = null; // events that came while a resync was fetching, or null
  let reconnectMs = 1000;
  let reconnectTimer = null;
  let keepaliveMs = 15000; // the hub's keep-alive, from `hello`
  let watchdog = null; // fires when the stream has been silent too long
  let signedOut = false;
  let audio = null;
  let beepTimer = null;

  const $ = (id) => document.getElementById(id);
  const roomKey = (site, room) => `${site}/${room}`;
  const hubNow = () => Date.now() + offsetMs;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function clockText(ms) {
    const total = Math.max(0, Math.floor(ms / 1000));
    const h = Math.floor(total / 3600);
    const m = Math.floor((total % 3600) / 60);
    const s = String(total % 60).padStart(2, "0");
    return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
  }

  // Each site's timezone, from the page: times are shown as the school's clocks show them.
  let zones = {};
  try {
    zones = JSON.parse(document.body.dataset.zones || "{}");
  } catch (e) {
    zones = {};
  }

  // A time as the school's clocks show it, with its day in front when that is not today (an overdue
  // record's alert may stay on the board for days: "09:00:00" alone reads as this morning).
  function timeText(iso, site) {
    if (!iso) return "";
    const d = new Date(iso);
    const options = { hour: "2-digit", minute: "2-digit", second: "2-digit" };
    const day = { weekday: "short", day: "numeric", month: "short" };
    let zone = zones[site];
    try {
      if (zone) new Intl.DateTimeFormat([], { timeZone: zone }); // throws for a zone it does not know
    } catch (e) {
      zone = undefined; // this browser's own clock, as before
    }
    const inZone = zone ? { timeZone: zone } : {};
    const time = d.toLocaleTimeString([], { ...options, ...inZone });
    const dayOf = (when) => when.toLocaleDateString([], { ...day, ...inZone });
    const today = dayOf(new Date(hubNow()));
    return dayOf(d) === today ? time : `${dayOf(d)} ${time}`;
  }

  // ------------------------------------------------------------------------------------- status

  function setLive(state) {
    document.body.dataset.live = state;
    const text = { on: "Live", off: "Not live", connecting: "Connecting…" }[state];
    $("live-status").textContent = text;
    $("live-lost").hidden = state !== "off" || signedOut;
  }

  function showSignedOut() {
    signedOut = true;
    if (source) source.close();
    source = null;
    setLive("off");
    $("signed-out").hidden = false;
    $("live-lost").hidden = true;
  }

  // ------------------------------------------------------------------------------------- rooms

  function roomView(r) {
    const li = el("li", "room");
    li.dataset.room = roomKey(r.site, r.room);
    const inEpisode = Boolean(r.episode_id);
    li.classList.toggle("in-episode", inEpisode);
    li.classList.toggle("unsupervised", inEpisode && r.supervised === false);
    li.classList.toggle("offline", !r.online);
    li.classList.toggle("maintenance", r.mode === "maintenance");

    const h = el("h3", null, r.name || r.room);
    if (siteCount() > 1) h.append(" ", el("span", "site", `(${r.site})`));
    li.append(h);

    if (inEpisode) {
      const p = el("p", "episode");
      // An episode entered by hand (the sensors failed): timed from the start staff entered.
      p.append(r.episode_manual ? "Child in room (entered by hand) — " : "Child in room — ");
      if (r.episode_start_uncertain) p.append("about ");
      const clock = el("span", "clock");
      if (r.episode_started_at) clock.dataset.since = String(Date.parse(r.episode_started_at));
      p.append(clock);
      li.append(p);
      let sup;
      if (r.supervised === true) sup = el("p", "supervision good", "Supervised");
      else if (r.supervised === false) sup = el("p", "supervision bad", "Not supervised");
      else if (r.episode_manual) sup = el("p", "supervision unknown", "Supervision not known: no sensor sees this room");
      else sup = el("p", "supervision unknown", "Supervision not known");
      li.append(sup);
    } else {
      li.append(el("p", "episode idle", "Room not in use"));
    }

    const dl = el("dl", "readings");
    const row = (label, value, bad) => {
      dl.append(el("dt", null, label));
      dl.append(el("dd", bad ? "bad" : null, value));
    };
    const reading = (kind) => {
      const v = r[kind];
      if (v === null || v === undefined) return "Not known";
      // A door held shut (the site file's lock_type "held") is not a locked door.
      if (kind === "lock" && v === "engaged" && r.lock_type === "held") return "Held shut";
      return (READINGS[kind] && READINGS[kind][v]) || v;
    };
    row("Door", reading("door"));
    // A room with a lock sensor always shows its lock, "Not known" until its first reading.
    if (r.has_lock || (r.lock !== null && r.lock !== undefined)) row("Lock", reading("lock"));
    row("Inside", reading("occupancy"));
    if (r.supervision !== "checkin") {
      row("Viewing panel", reading("observer"), inEpisode && r.observer === "absent");
    }
    if (r.supervision) row("Supervision by", SUPERVISION_MODE[r.supervision] || r.supervision);
    row("Sensors", r.online ? "Online" : "OFFLINE — the hub hears nothing from this room", !r.online);
    if (r.mode === "maintenance") {
      const until = r.mode_until ? ` until ${timeText(r.mode_until, r.site)}` : "";
      const why = r.mode_reason ? ` (${r.mode_reason})` : "";
      row("Mode", `Maintenance${until}${why}: alerts held`, true);
    } else {
      row("Mode", "Normal");
    }
    li.append(dl);
    return li;
  }

  function siteCount() {
    return new Set([...rooms.values()].map((r) => r.site)).size;
  }

  function renderRooms() {
    const list = $("rooms");
    const sorted = [...rooms.values()].sort(
      (a, b) => a.site.localeCompare(b.site) || (a.name || a.room).localeCompare(b.name || b.room),
    );
    list.replaceChildren(...sorted.map(roomView));
    $("no-rooms").textContent = "No rooms to show.";
    $("no-rooms").hidden = sorted.length > 0;
    tick();
  }

  // ------------------------------------------------------------------------------------ alerts

  const needsAction = (a) => a.needs_ack !== false && !a.acknowledged_at && !a.resolved_at;

  // What an alert is about, in the words its card shows: the kind and the room (the hub sends no
  // child's name with an alert, and the board shows none).
  function alertWords(a) {
    const room = rooms.get(roomKey(a.site, a.room));
    let roomName = a.room_name || (room && room.name) || a.room;
    // A board of several schools names the school, as its room cards do: each may have a "Calm room 1".
    if (siteCount() > 1) roomName += ` (${a.site})`;
    const what =
      (a.kind === "report_overdue" && REPORT_STEP[a.rule]) || KIND[a.kind] || String(a.kind).replaceAll("_", " ");
    return { what, roomName };
  }

  // An alert's card, empty: `fillAlertCard` writes it, and writes it again in place on every change, so
  // that its controls (and the focus on them) stay while the alert is on the board.
  function alertCard(a) {
    const li = el("li", "alert");
    li.dataset.alertId = a.id;
    li.id = `alert-${a.id}`; // a notice's link ends in #alert-{id}
    li.tabIndex = -1; // focused when its Acknowledge button goes (acknowledged)
    const h = el("h3");
    h.id = `alert-${a.id}-what`;
    const line = el("p", "ack-line");
    line.id = `alert-${a.id}-ack`;
    li.setAttribute("aria-labelledby", h.id);
    li.setAttribute("aria-describedby", line.id);
    const error = el("p", "ack-error");
    error.setAttribute("role", "alert");
    li.append(h, el("p", "meta"), line, error);
    return li;
  }

  function fillAlertCard(li, a) {
    const [h, meta, line, error] = li.children;
    const linked = li.classList.contains("linked");
    li.className = `alert sev-${a.severity}`;
    li.classList.toggle("linked", linked);
    li.classList.toggle("needs-action", needsAction(a));
    li.classList.toggle("acknowledged", Boolean(a.acknowledged_at));
    li.classList.toggle("held", Boolean(a.held));

    const { what, roomName } = alertWords(a);
    const sev = el("span", "severity", (a.severity === "critical" ? "⚠ " : "") + (SEVERITY[a.severity] || a.severity));
    h.replaceChildren(sev, `${what} — ${roomName}`);

    meta.replaceChildren(`Raised ${timeText(a.raised_at, a.site)}`);
    if (a.tier) {
      const escalated = Array.isArray(a.escalations) ? a.escalations.length - 1 : 0;
      meta.append(` · Told: ${TIER[a.tier] || a.tier}`);
      if (escalated > 0) meta.append(` (escalated ${escalated}×)`);
    }
    if (a.late) {
      const m = el("span", "marker", "Raised late");
      m.title = "Raised more than a second after it was due: the hub was behind or had been stopped.";
      meta.append(m);
    }
    if (a.held) {
      const m = el("span", "marker", "Held: room in maintenance");
      m.title = "The room is in maintenance: this alert is recorded but not sent to anyone.";
      meta.append(m);
    }

    const state = a.acknowledged_at ? "done" : a.needs_ack === false ? "info" : "waiting";
    // Still waiting: the line and its button stay as they are (a button being pressed keeps its focus).
    if (state !== "waiting" || line.dataset.state !== "waiting") {
      line.dataset.state = state;
      if (state === "done") {
        line.replaceChildren(
          el("span", "ack-done", `Acknowledged by ${a.acknowledged_by || "someone"} at ${timeText(a.acknowledged_at, a.site)}`),
        );
      } else if (state === "info") {
        line.replaceChildren(el("span", "meta", "For information: no acknowledgement needed"));
      } else {
        const button = el("button", "ack-button", "Acknowledge");
        button.type = "button";
        button.dataset.control = "ack";
        button.addEventListener("click", () => acknowledge(a.id, button, li));
        line.replaceChildren(el("span", null, "Waiting for acknowledgement"), button);
      }
      if (state !== "waiting") error.textContent = "";
    }
    const button = line.querySelector(".ack-button");
    if (button) button.setAttribute("aria-label", `Acknowledge: ${what} — ${roomName}`);
  }

  // First what a person must act on now; a held alert (room in maintenance) is sent to nobody.
  const urgent = (a) => needsAction(a) && !a.held;

  function alertOrder(a, b) {
    return (
      Number(urgent(b)) - Number(urgent(a)) ||
      Number(needsAction(b)) - Number(needsAction(a)) ||
      (SEVERITY_ORDER[a.severity] ?? 3) - (SEVERITY_ORDER[b.severity] ?? 3) ||
      String(a.raised_at).localeCompare(String(b.raised_at))
    );
  }

  // Moves a card in the list: with moveBefore where the browser has it, a card keeps the focus on it or
  // in it; elsewhere `keepFocus` gives it back.
  function place(list, li, before) {
    if (li.parentNode === list && typeof list.moveBefore === "function") {
      try {
        list.moveBefore(li, before);
        return;
      } catch (err) {
        // not movable so: insert it as usual
      }
    }
    list.insertBefore(li, before);
  }

  // After the list changed: where the focus was on an alert's card (or a control in it), it is there
  // still; else on that card's same control, or on the card itself once the control has gone (its
  // Acknowledge button, once acknowledged); on the list's heading if the alert has left the board.
  function keepFocus(focused, card, control) {
    if (!card || (focused.isConnected && document.activeElement === focused)) return;
    if (!card.isConnected) {
      $("alerts-heading").focus();
      return;
    }
    const same = control ? card.querySelector(`[data-control="${control}"]`) : null;
    (same || card).focus();
  }

  function renderAlerts() {
    const list = $("alerts");
    const active = [...alerts.values()].sort(alertOrder);
    const focused = document.activeElement;
    const focusedCard = focused && focused !== list && list.contains(focused) ? focused.closest(".alert") : null;
    const control = focusedCard && focused !== focusedCard ? focused.dataset.control || null : null;
    // Each alert keeps its card: changed in place, moved when its place in the order changes.
    const cards = new Map([...list.children].map((li) => [li.dataset.alertId, li]));
    const shown = new Set(active.map((a) => a.id));
    for (const [id, li] of cards) if (!shown.has(id)) li.remove();
    active.forEach((a, i) => {
      const card = cards.get(a.id) || alertCard(a);
      const stamp = JSON.stringify(a) + (rooms.get(roomKey(a.site, a.room))?.name || "");
      if (card.dataset.stamp !== stamp) {
        fillAlertCard(card, a);
        card.dataset.stamp = stamp;
      }
      const here = list.children[i] || null;
      if (here !== card) place(list, card, here);
    });
    keepFocus(focused, focusedCard, control);
    $("no-alerts").hidden = active.length > 0;
    const waiting = active.filter(needsAction).length;
    $("alert-count").textContent = active.length
      ? `(${active.length}; ${waiting} waiting for acknowledgement)`
      : "";
    document.title = waiting ? `(${waiting}) Live board — Seclusion rooms` : "Live board — Seclusion rooms";
    announceNew(active);
    updateAlarm();
    showLinked();
  }

  // ------------------------------------------------------------------------------ announcements

  // Screen readers are told of each new alert once, in the words its card shows (the kind and the
  // room; never a child's name): a critical alert that waits for someone at once (assertive), any
  // other politely. Alerts already active when the board opens are not news: they are on the list.
  const ANNOUNCED_KEPT = 5;
  let known = null; // the alerts on the board (id: held?), once the first full list has been shown

  function say(regionId, words) {
    const region = $(regionId);
    region.append(el("p", null, words));
    while (region.childElementCount > ANNOUNCED_KEPT) region.firstElementChild.remove();
  }

  function announceNew(active) {
    if (known === null) return;
    for (const a of active) {
      const { what, roomName } = alertWords(a);
      if (known.has(a.id)) {
        // Held while the room was in maintenance, and now sent to staff: news as much as a new one.
        if (known.get(a.id) && !a.held) {
          const words = `Maintenance over, alert now sent (${SEVERITY[a.severity] || a.severity}): ${what} — ${roomName}.`;
          say(a.severity === "critical" && urgent(a) ? "alert-news-urgent" : "alert-news", words);
        }
        continue;
      }
      let words = `New alert (${SEVERITY[a.severity] || a.severity}): ${what} — ${roomName}.`;
      if (a.held) words += " Held: room in maintenance.";
      else if (a.acknowledged_at) words += " Already acknowledged.";
      say(a.severity === "critical" && urgent(a) ? "alert-news-urgent" : "alert-news", words);
    }
    known = new Map(active.map((a) => [a.id, Boolean(a.held)]));
  }

  // A notice's link (…/#alert-{id}) opens the board at its alert: once it is on the board, it is brought
  // into view and its Acknowledge button (or the alert itself) takes the focus, once per link followed.
  let linked = location.hash;

  function showLinked() {
    if (!linked.startsWith("#alert-")) return;
    const li = document.getElementById(decodeURIComponent(linked.slice(1)));
    if (!li) return;
    linked = "";
    li.classList.add("linked");
    li.scrollIntoView({ block: "center" });
    (li.querySelector(".ack-button") || li).focus();
  }

  window.addEventListener("hashchange", () => {
    linked = location.hash;
    showLinked();
  });

  function upsertAlert(a) {
    if (a.resolved_at) alerts.delete(a.id);
    else alerts.set(a.id, a);
  }

  // While the hub is asked, the button is aria-disabled, not disabled: a disabled button would lose the
  // focus (to the page), and the focus goes from it to its card once the alert is acknowledged.
  async function acknowledge(id, button, li) {
    if (button.getAttribute("aria-disabled") === "true") return;
    const error = li.querySelector(".ack-error");
    button.setAttribute("aria-disabled", "true");
    button.textContent = "Acknowledging…";
    error.textContent = "";
    let problem = "";
    try {
      const response = await fetch(`/api/alerts/${encodeURIComponent(id)}/ack`, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: "{}",
        signal: AbortSignal.timeout(FETCH_TIMEOUT_MS),
      });
      if (response.status === 401) {
        showSignedOut();
        return;
      }
      if (response.ok) {
        const alert = await response.json();
        // Only while it is still on the board: the live stream may already have said it was resolved
        // (in the same batch as the acknowledgement), and this answer, older, would bring it back.
        if (alert && alert.id === id && alerts.has(id)) {
          upsertAlert(alert);
          renderAlerts();
        }
        return;
      }
      problem = `the hub answered ${response.status}`;
    } catch (err) {
      problem = "the hub could not be reached";
    }
    button.removeAttribute("aria-disabled");
    button.textContent = "Acknowledge";
    // Acknowledged meanwhile (by someone else: the button has gone), there is nothing to try again.
    if (button.isConnected) error.textContent = `Not acknowledged: ${problem}. Try again.`;
  }

  // ------------------------------------------------------------------------------------- sound

  function alarming() {
    for (const a of alerts.values()) {
      if (a.severity === "critical" && urgent(a)) return true;
    }
    return false;
  }

  function soundOn() {
    return audio !== null && audio.state === "running";
  }

  function showSound() {
    const on = soundOn();
    document.body.dataset.sound = on ? "on" : "off";
    $("sound-off").hidden = on;
    $("sound-on").hidden = !on;
  }

  function beep() {
    if (!soundOn()) return;
    const t = audio.currentTime;
    [880, 660].forEach((freq, i) => {
      const osc = audio.createOscillator();
      const gain = audio.createGain();
      osc.type = "square";
      osc.frequency.value = freq;
      const start = t + i * 0.25;
      gain.gain.setValueAtTime(0.0001, start);
      gain.gain.exponentialRampToValueAtTime(0.25, start + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, start + 0.2);
      osc.connect(gain).connect(audio.destination);
      osc.start(start);
      osc.stop(start + 0.22);
    });
  }

  function updateAlarm() {
    const on = alarming();
    document.body.dataset.alarm = on ? "on" : "off";
    if (on && beepTimer === null) {
      beep();
      beepTimer = setInterval(beep, BEEP_EVERY_MS);
    } else if (!on && beepTimer !== null) {
      clearInterval(beepTimer);
      beepTimer = null;
    }
  }

  async function enableSound() {
    // Browsers allow sound only after a person has used the page: this click is that.
    const Context = window.AudioContext || window.webkitAudioContext;
    if (!Context) {
      $("sound-off").querySelector("strong").textContent = "This browser cannot play the alarm.";
      return;
    }
    if (audio === null) {
      audio = new Context();
      audio.addEventListener("statechange", showSound);
    }
    try {
      await audio.resume();
    } catch (err) {
      // stays suspended: the banner keeps saying so
    }
    showSound();
    beep();
  }

  // ------------------------------------------------------------------------------ live stream

  async function fetchAll(path) {
    const items = [];
    let cursor = null;
    for (let page = 0; page < 100; page++) {
      const sep = path.includes("?") ? "&" : "?";
      const url = `${path}${sep}limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
      const response = await fetch(url, {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
        signal: AbortSignal.timeout(FETCH_TIMEOUT_MS),
      });
      if (response.status === 401) throw Object.assign(new Error("signed out"), { signedOut: true });
      if (!response.ok) throw new Error(`${path}: ${response.status}`);
      const body = await response.json();
      items.push(...body.items);
      cursor = body.next;
      if (!cursor) break;
    }
    return items;
  }

  function apply(kind, data) {
    if (kind === "room") {
      rooms.set(roomKey(data.site, data.room), data);
      renderRooms();
      renderAlerts(); // an alert shows its room's name
    } else if (kind === "alert") {
      upsertAlert(data);
      renderAlerts();
    }
  }

  async function resync() {
    const mine = ++generation;
    buffered = [];
    try {
      const [roomItems, alertItems] = await Promise.all([
        fetchAll("/api/rooms"),
        fetchAll("/api/alerts?state=active"),
      ]);
      if (mine !== generation) return;
      rooms.clear();
      for (const r of roomItems) rooms.set(roomKey(r.site, r.room), r);
      alerts.clear();
      for (const a of alertItems) upsertAlert(a);
      // What came while fetching may be newer than the lists: apply it in order, after them.
      const pending = buffered;
      buffered = null;
      for (const [kind, data] of pending) {
        if (kind === "room") rooms.set(roomKey(data.site, data.room), data);
        else upsertAlert(data);
      }
      renderRooms();
      renderAlerts();
      // What the board opened with is not news.
      if (known === null) known = new Map([...alerts.values()].map((a) => [a.id, Boolean(a.held)]));
      reconnectMs = 1000;
      setLive("on");
    } catch (err) {
      if (mine !== generation) return;
      buffered = null;
      if (err.signedOut) showSignedOut();
      else restart();
    }
  }

  function onData(kind, event) {
    let data;
    try {
      data = JSON.parse(event.data);
    } catch (err) {
      return;
    }
    if (buffered !== null) buffered.push([kind, data]);
    else apply(kind, data);
  }

  function connect() {
    if (signedOut) return;
    reconnectTimer = null;
    const es = new EventSource("/api/live");
    source = es;
    es.addEventListener("hello", (event) => {
      try {
        const hello = JSON.parse(event.data);
        offsetMs = Date.parse(hello.server_time) - Date.now();
        if (Number(hello.keepalive_s) > 0) keepaliveMs = Number(hello.keepalive_s) * 1000;
      } catch (err) {
        offsetMs = 0;
      }
      heard(es);
      resync();
    });
    es.addEventListener("ping", () => heard(es));
    es.addEventListener("room", (event) => {
      heard(es);
      onData("room", event);
    });
    es.addEventListener("alert", (event) => {
      heard(es);
      onData("alert", event);
    });
    // The token was revoked while the stream was open: the session is over, say so and stop trying.
    es.addEventListener("signed_out", () => showSignedOut());
    es.addEventListener("reload", () => {
      // The hub ended this stream (it fell behind, or the hub is stopping). The browser reconnects
      // by itself and the next `hello` fetches everything again. Never reload the page: that
      // would switch the sound off.
      setLive("off");
    });
    es.addEventListener("error", () => {
      if (source !== es) return;
      lost();
      if (es.readyState === EventSource.CLOSED) restart(); // refused (401, 503): retry ourselves
    });
  }

  // A stream can go quiet without closing (a stalled network path, a proxy holding the browser's side
  // open, the hub's machine paused): the hub sends something every keep-alive, so silence for a few of
  // them means the board is no longer live. It says so, and connects again.
  function heard(es) {
    if (source !== es) return;
    if (watchdog !== null) clearTimeout(watchdog);
    watchdog = setTimeout(() => {
      watchdog = null;
      if (source !== es) return;
      lost();
      restart();
    }, keepaliveMs * SILENT_KEEPALIVES);
  }

  // The stream is lost (an error, or silence): what a resync in flight fetched belongs to it.
  function lost() {
    generation++;
    buffered = null;
    setLive("off");
  }

  function restart() {
    if (watchdog !== null) clearTimeout(watchdog);
    watchdog = null;
    if (source) source.close();
    source = null;
    setLive("off");
    if (reconnectTimer !== null || signedOut) return;
    reconnectTimer = setTimeout(async () => {
      reconnectTimer = null;
      try {
        const response = await fetch("/api/rooms?limit=1", {
          credentials: "same-origin",
          signal: AbortSignal.timeout(FETCH_TIMEOUT_MS),
        });
        if (response.status === 401) {
          showSignedOut();
          return;
        }
      } catch (err) {
        // the hub is unreachable: try the stream anyway, and back off
      }
      reconnectMs = Math.min(reconnectMs * 2, RECONNECT_MAX_MS);
      connect();
    }, reconnectMs);
  }

  // ------------------------------------------------------------------------------------ clocks

  function tick() {
    const now = hubNow();
    for (const clock of document.querySelectorAll(".clock[data-since]")) {
      clock.textContent = clockText(now - Number(clock.dataset.since));
    }
  }

  function start() {
    $("enable-sound").addEventListener("click", enableSound);
    $("test-sound").addEventListener("click", beep);
    showSound();
    setLive("connecting");
    setInterval(tick, 1000);
    // A full resync now and then, in case an event was lost on the way.
    setInterval(() => {
      if (document.body.dataset.live === "on" && buffered === null) resync();
    }, RESYNC_EVERY_MS);
    connect();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
