// The class schema (value, name, colour) as an editable table, with the current class.

const PALETTE = [
  [230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180],
  [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128],
];

const hex = (rgb) => "#" + rgb.map((c) => c.toString(16).padStart(2, "0")).join("");
const rgbOf = (text) => [1, 3, 5].map((i) => parseInt(text.slice(i, i + 2), 16));

/** A class's colour, from the palette when it has none. */
export function colourOf(cls) {
  return cls.Color || PALETTE[(cls.Value - 1 + PALETTE.length) % PALETTE.length];
}

export class ClassTable {
  /**
   * @param {HTMLTableSectionElement} body the table body rows go in
   * @param {{onChange: Function, onPick: Function, counts: Function, refuse: Function}} hooks
   *   onChange(kind, old, cls) after an edit ("value", "name", "colour", "add", "delete");
   *   onPick(value) when the current class changes; counts() -> {value: samples};
   *   refuse(message) when an edit is refused
   */
  constructor(body, hooks) {
    this.body = body;
    this.hooks = hooks;
    this.classes = [];
    this.current = null;
    body.addEventListener("change", (e) => this.edited(e));
    body.addEventListener("click", (e) => this.clicked(e));
  }

  set(classes) {
    this.classes = classes.map((c) => ({ ...c, Color: colourOf(c) }));
    if (!this.classes.some((c) => c.Value === this.current)) {
      this.current = this.classes.length ? this.classes[0].Value : null;
    }
    this.render();
  }

  byValue(value) {
    return this.classes.find((c) => c.Value === value);
  }

  /** The current class, made first when there is none. */
  currentClass() {
    if (this.current === null) this.add();
    return this.byValue(this.current);
  }

  pick(value) {
    if (!this.byValue(value)) return;
    this.current = value;
    this.render();
    this.hooks.onPick(value);
  }

  pickIndex(index) {
    if (index < this.classes.length) this.pick(this.classes[index].Value);
  }

  add() {
    const value = Math.max(0, ...this.classes.map((c) => c.Value)) + 1;
    const cls = { Value: value, Name: `Class ${value}`, Color: null };
    cls.Color = colourOf(cls);
    this.classes.push(cls);
    this.current = value;
    this.render();
    this.hooks.onChange("add", null, cls);
  }

  render() {
    const counts = this.hooks.counts();
    this.body.innerHTML = this.classes
      .map(
        (c) =>
          `<tr data-value="${c.Value}" class="${c.Value === this.current ? "current" : ""}">` +
          `<td><input type="color" data-field="colour" value="${hex(c.Color)}"></td>` +
          `<td><input type="number" data-field="value" value="${c.Value}" step="1" min="1"></td>` +
          `<td><input type="text" data-field="name" value="${c.Name.replace(/"/g, "&quot;")}"></td>` +
          `<td class="count">${counts[c.Value] || 0}</td>` +
          `<td><button data-field="delete" title="Delete the class">✕</button></td></tr>`,
      )
      .join("");
  }

  clicked(event) {
    const row = event.target.closest("tr");
    if (!row) return;
    const cls = this.byValue(Number(row.dataset.value));
    if (event.target.dataset.field === "delete") {
      const used = this.hooks.counts()[cls.Value] || 0;
      if (used) {
        this.hooks.refuse(`${used} samples are of class ${cls.Name}: delete or reclass them first`);
        return;
      }
      this.classes = this.classes.filter((c) => c !== cls);
      if (this.current === cls.Value) this.current = this.classes[0]?.Value ?? null;
      this.render();
      this.hooks.onChange("delete", cls, null);
    } else if (event.target.tagName !== "INPUT" && cls.Value !== this.current) {
      this.pick(cls.Value);
    }
  }

  edited(event) {
    const field = event.target.dataset.field;
    const row = event.target.closest("tr");
    const cls = this.byValue(Number(row.dataset.value));
    const old = { ...cls };
    if (field === "value") {
      const value = Number(event.target.value);
      if (!Number.isInteger(value) || value < 1 || this.byValue(value)) {
        this.hooks.refuse(`class value ${event.target.value} is taken or not a whole number ≥ 1`);
        this.render();
        return;
      }
      cls.Value = value;
      if (this.current === old.Value) this.current = value;
    } else if (field === "name") {
      cls.Name = event.target.value.trim() || String(cls.Value);
    } else if (field === "colour") {
      cls.Color = rgbOf(event.target.value);
    }
    this.render();
    this.hooks.onChange(field, old, cls);
  }
}
