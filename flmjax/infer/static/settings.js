// The sampling settings of the release's client, in its names (what POST /api/settings takes), shown with
// the server's defaults. Changed ones travel as query parameters of /api/chat: this conversation only.

const ROWS = [
  { key: "temp", label: "Temperature", min: 0, step: 0.01 },
  { key: "top_p", label: "Top-p (0: use top-k)", min: 0, max: 1, step: 0.01 },
  { key: "top_k", label: "Top-k (0: all)", min: 0, step: 1 },
  { key: "repetition_penalty", label: "Repetition penalty", min: 1, step: 0.01 },
  { key: "repetition_penalty_window", label: "Penalty window (frames)", min: 0, step: 1 },
];
const SIDES = ["text", "audio"];

export class SettingsForm {
  constructor(form, summary) {
    this.form = form;
    this.summary = summary;
    this.defaults = null;
    form.addEventListener("input", () => this.mark());
    form.addEventListener("submit", (e) => e.preventDefault());
  }

  // Build the inputs around the server's defaults ({release name: value}).
  show(defaults, maxWindow) {
    this.defaults = defaults;
    const table = document.createElement("table");
    table.innerHTML = "<thead><tr><th></th><th>Text</th><th>Audio</th></tr></thead>";
    const body = table.createTBody();
    for (const row of ROWS) {
      const tr = body.insertRow();
      tr.insertCell().textContent = row.label;
      for (const side of SIDES) {
        const name = `${row.key}_${side}`;
        const input = Object.assign(document.createElement("input"), {
          type: "number", name, step: row.step, min: row.min, required: true, value: defaults[name],
        });
        if (row.max !== undefined) input.max = row.max;
        if (row.key === "repetition_penalty_window") input.max = maxWindow;
        const hint = Object.assign(document.createElement("small"), { textContent: `default ${defaults[name]}` });
        const cell = tr.insertCell();
        cell.append(input, hint);
      }
    }
    const sampling = document.createElement("label");
    sampling.className = "check";
    const box = Object.assign(document.createElement("input"), {
      type: "checkbox", name: "use_sampling", checked: defaults.use_sampling,
    });
    sampling.append(box, ` Sample (off: always the most likely token; default ${defaults.use_sampling ? "on" : "off"})`);
    const reset = Object.assign(document.createElement("button"), { type: "button", textContent: "Server defaults" });
    reset.addEventListener("click", () => this.show(this.defaults, maxWindow));
    this.form.replaceChildren(table, sampling, reset);
    this.mark();
  }

  // {release name: value} of the settings that differ from the server's defaults.
  overrides() {
    const changed = {};
    if (!this.defaults) return changed;
    for (const input of this.form.querySelectorAll("input")) {
      const value = input.type === "checkbox" ? input.checked : Number(input.value);
      if (value !== this.defaults[input.name]) changed[input.name] = value;
    }
    return changed;
  }

  valid() {
    return this.form.reportValidity();
  }

  setEnabled(enabled) {
    for (const input of this.form.querySelectorAll("input, button")) input.disabled = !enabled;
  }

  mark() {
    const changed = this.overrides();
    for (const input of this.form.querySelectorAll("input")) input.classList.toggle("changed", input.name in changed);
    const n = Object.keys(changed).length;
    this.summary.textContent = n ? `${n} changed for the next conversation` : "server defaults";
  }
}
