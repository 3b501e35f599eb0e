// The record pages: sends the staff's record and the workflow's steps to the hub's API with the
// session cookie (fetch, JSON), shows the API's 422 field errors next to their fields, and reloads
// the page (server-rendered) once a step is done. Plain JavaScript, no build step, nothing from
// elsewhere. Messages are put on the page as text (textContent), never as HTML.
"use strict";

(() => {
  const page = location.pathname;

  function done(key) {
    location.assign(`${page}?done=${encodeURIComponent(key)}`);
  }

  async function send(method, url, body, headers) {
    const init = { method, credentials: "same-origin", headers: { Accept: "application/json", ...headers } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch (_error) {
      return { ok: false, status: 0, data: null };
    }
    let data = null;
    try {
      data = await response.json();
    } catch (_error) {
      data = null;
    }
    return { ok: response.ok, status: response.status, data, etag: response.headers.get("ETag") };
  }

  function labelOf(form, name) {
    const wrapper = document.querySelector(`[data-field="${CSS.escape(name)}"]`);
    if (wrapper && wrapper.dataset.label) return wrapper.dataset.label;
    const input = form.querySelector(`[name="${CSS.escape(name)}"]`);
    const label = input && input.id ? document.querySelector(`label[for="${CSS.escape(input.id)}"]`) : null;
    return label ? label.textContent.trim() : name.replace(/_/g, " ");
  }

  function fieldBox(form, name) {
    const wrapper = document.querySelector(`[data-field="${CSS.escape(name)}"]`);
    if (wrapper) return wrapper;
    const input = form.querySelector(`[name="${CSS.escape(name)}"]`);
    return input ? input.closest(".field") : null;
  }

  function clearErrors(box) {
    box.textContent = "";
    for (const el of document.querySelectorAll(".field-error")) el.textContent = "";
    for (const el of document.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
  }

  function markField(form, name, message) {
    const wrapper = fieldBox(form, name);
    if (!wrapper) return false;
    const slot = wrapper.querySelector(".field-error");
    if (slot) slot.textContent = message;
    for (const input of wrapper.querySelectorAll("input, select, textarea")) {
      if (input.type !== "hidden") input.setAttribute("aria-invalid", "true");
    }
    return true;
  }

  // The messages of a refused request, in words, each one also put next to its field.
  function showErrors(form, box, result, intro) {
    const lines = [];
    const detail = result.data && result.data.detail;
    if (result.status === 0) {
      lines.push("The hub could not be reached. Nothing was saved: try again.");
    } else if (result.status === 401) {
      lines.push("You are signed out. Sign in again (your changes on this page were not saved).");
    } else if (result.status === 412) {
      lines.push(
        "Someone else changed this record while you had it open. Nothing was saved: what you typed is " +
          "still here. Reload the page to see their change (copy what you typed first), then add yours.",
      );
    } else if (Array.isArray(detail)) {
      for (const item of detail) {
        const loc = (item.loc || []).filter((part) => typeof part === "string" && part !== "body");
        const name = loc[0] || "";
        const message = String(item.msg || "not accepted").replace(/^Value error, /, "");
        const missing = /^still to complete: (.*)$/.exec(message) || /^before the review, record: (.*)$/.exec(message);
        if (missing) {
          const names = missing[1].split(", ");
          lines.push(`${intro} ${names.map((n) => labelOf(form, n)).join("; ")}.`);
          for (const n of names) markField(form, n, "This is still to complete.");
        } else {
          const label = name ? labelOf(form, name) : "";
          lines.push(label ? `${label}: ${message}` : message);
          if (name) markField(form, name, message);
        }
      }
    } else if (typeof detail === "string") {
      lines.push(detail.charAt(0).toUpperCase() + detail.slice(1) + ".");
    } else {
      lines.push(`The hub refused this (error ${result.status}).`);
    }
    box.textContent = "";
    if (lines.length > 1) {
      const list = document.createElement("ul");
      for (const line of lines) {
        const li = document.createElement("li");
        li.textContent = line;
        list.append(li);
      }
      box.append(list);
    } else {
      box.textContent = lines[0] || "";
    }
    box.focus();
  }

  // -- the staff's record

  // Set while the record form holds changes not yet saved: a step taken meanwhile saves them first,
  // since the page reloads after every step.
  let saveChanges = null;

  function recordBody(form) {
    const body = {};
    for (const el of form.querySelectorAll("[data-record]")) {
      body[el.name] = el.value.trim() === "" ? null : el.value;
    }
    const chosen = (name) => {
      const input = form.querySelector(`input[name="${name}"]:checked`);
      return input ? input.value : null;
    };
    body.classification = chosen("classification");
    const offered = chosen("follow_up_offered");
    body.follow_up_offered = offered === null ? null : offered === "yes";
    const staff = [];
    for (const row of form.querySelectorAll(".staff-row")) {
      const name = row.querySelector(".staff-name").value.trim();
      if (name) staff.push({ name, role: row.querySelector(".staff-role").value });
    }
    body.staff = staff.length ? staff : null;
    return body;
  }

  function renumberStaff(list) {
    const rows = [...list.querySelectorAll(".staff-row")];
    rows.forEach((row, i) => {
      const n = i + 1;
      const name = row.querySelector(".staff-name");
      const role = row.querySelector(".staff-role");
      const labels = row.querySelectorAll("label");
      name.id = `staff-name-${n}`;
      role.id = `staff-role-${n}`;
      labels[0].htmlFor = name.id;
      labels[0].textContent = `Adult ${n}: name`;
      labels[1].htmlFor = role.id;
      labels[1].textContent = `Adult ${n}: role`;
      row.querySelector(".remove-staff").textContent = `Remove adult ${n}`;
    });
  }

  function setUpRecordForm(form) {
    let changed = false; // typed into, or an adult added or removed, since the last save
    const box = document.getElementById("record-errors");
    const list = document.getElementById("staff-list");
    const template = document.getElementById("staff-row-template");
    const addButton = document.getElementById("add-staff");
    addButton.addEventListener("click", () => {
      list.append(template.content.cloneNode(true));
      renumberStaff(list);
      const rows = list.querySelectorAll(".staff-row");
      rows[rows.length - 1].querySelector(".staff-name").focus();
    });
    list.addEventListener("click", (event) => {
      const button = event.target.closest(".remove-staff");
      if (!button) return;
      const rows = list.querySelectorAll(".staff-row");
      const row = button.closest(".staff-row");
      if (rows.length === 1) {
        row.querySelector(".staff-name").value = "";
        row.querySelector(".staff-name").focus();
        return;
      }
      row.remove();
      renumberStaff(list);
      changed = true;
      addButton.focus();
    });

    const buttons = form.querySelectorAll("button");
    const busy = (on) => {
      for (const b of buttons) b.disabled = on;
    };
    form.addEventListener("input", () => {
      changed = true;
    });
    // The record as the page showed it: a save sends only the fields the person changed, onto the
    // version the page showed (If-Match). Changed by someone else meanwhile, the hub saves nothing
    // (412) and the page keeps what was typed.
    let shown = recordBody(form);
    const save = async () => {
      clearErrors(box);
      const now = recordBody(form);
      const body = {};
      for (const [name, value] of Object.entries(now)) {
        if (JSON.stringify(value) !== JSON.stringify(shown[name])) body[name] = value;
      }
      if (Object.keys(body).length === 0) {
        changed = false;
        return true;
      }
      const result = await send("PATCH", `/api/incidents/${form.dataset.incident}`, body, {
        "If-Match": form.dataset.version,
      });
      if (!result.ok) showErrors(form, box, result, "Not saved:");
      if (result.ok) {
        changed = false;
        shown = now;
        if (result.etag) form.dataset.version = result.etag;
      }
      return result.ok;
    };
    // Whatever the form now holds that differs from what the page showed (a typed word, an adult
    // added or removed: a click, not an input event), saved before any step.
    saveChanges = async () => save();
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      busy(true);
      try {
        if (await save()) done("saved");
      } finally {
        busy(false);
      }
    });
    const mark = document.getElementById("mark-recorded");
    if (mark) {
      mark.addEventListener("click", async () => {
        busy(true);
        try {
          if (!(await save())) return;
          const result = await send("POST", `/api/incidents/${form.dataset.incident}/record`);
          if (result.ok) {
            done("recorded");
          } else {
            showErrors(form, box, result, "The record was saved, but it cannot be marked as recorded yet. Still to complete:");
          }
        } finally {
          busy(false);
        }
      });
    }
  }

  // -- the workflow's steps: each form sends its named fields as JSON

  function setUpActionForm(form) {
    const box = form.querySelector(".error-box");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearErrors(box);
      const body = {};
      for (const el of form.querySelectorAll("[name]")) {
        if (el.hasAttribute("data-local") || el.value.trim() === "") continue;
        body[el.name] = el.value;
      }
      // A form that sets a field to nothing (the child taken off a record) says so with `data-null`.
      if (form.dataset.null) body[form.dataset.null] = null;
      const button = form.querySelector("button[type=submit]");
      button.disabled = true;
      try {
        if (saveChanges && !(await saveChanges())) return;
        const result = await send(form.dataset.method, form.dataset.url, body);
        if (result.ok) {
          done(form.dataset.done);
        } else {
          showErrors(form, box, result, "Still to record:");
        }
      } finally {
        button.disabled = false;
      }
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const form = document.getElementById("record-form");
    if (form) setUpRecordForm(form);
    for (const action of document.querySelectorAll("form.action-form")) setUpActionForm(action);
    const notice = document.getElementById("done");
    if (notice) notice.focus();
  });
})();
