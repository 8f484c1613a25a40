// Loss curves on a <canvas>: one line per series, shared axes, no chart library.
const COLORS = ["#5b3cc4", "#d9480f", "#1b7a3a", "#0b7285", "#c2255c", "#5c940d", "#e67700", "#343a40"];

export class LineChart {
  /** label(name): the words a legend shows for a series; shown(name): whether it is drawn. */
  constructor(canvas, legend, { label = (name) => name, shown = () => true } = {}) {
    this.canvas = canvas;
    this.legend = legend;
    this.label = label;
    this.shown = shown;
    this.series = new Map(); // name -> [[step, value], ...]
  }

  /** Draw only the series `shown(name)` accepts (the others keep their points). */
  setShown(shown) {
    this.shown = shown;
    this.draw();
  }

  add(step, values) {
    for (const [name, v] of Object.entries(values)) {
      if (typeof v !== "number" || !isFinite(v)) continue;
      if (!this.series.has(name)) this.series.set(name, []);
      const pts = this.series.get(name);
      if (pts.length && pts[pts.length - 1][0] === step) pts[pts.length - 1] = [step, v];
      else pts.push([step, v]);
    }
    this.draw();
  }

  draw() {
    const c = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth || 600;
    const hgt = c.clientHeight || 220;
    c.width = Math.round(w * dpr);
    c.height = Math.round(hgt * dpr);
    const ctx = c.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, hgt);
    const visible = [...this.series].filter(([name]) => this.shown(name));
    const all = visible.map(([, pts]) => pts).flat();
    this.legend.replaceChildren();
    if (!all.length) {
      ctx.fillStyle = "#5c5c66";
      ctx.font = "13px system-ui, sans-serif";
      ctx.fillText("Losses appear here as training logs them.", 12, 24);
      return;
    }
    const pad = { l: 48, r: 10, t: 10, b: 24 };
    let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
    let [y0, y1] = [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
    if (x1 === x0) x1 = x0 + 1;
    if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
    const X = (x) => pad.l + ((x - x0) / (x1 - x0)) * (w - pad.l - pad.r);
    const Y = (y) => hgt - pad.b - ((y - y0) / (y1 - y0)) * (hgt - pad.t - pad.b);
    ctx.strokeStyle = "#d8d8de";
    ctx.fillStyle = "#5c5c66";
    ctx.font = "11px system-ui, sans-serif";
    ctx.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const v = y0 + ((y1 - y0) * i) / 4;
      ctx.beginPath();
      ctx.moveTo(pad.l, Y(v));
      ctx.lineTo(w - pad.r, Y(v));
      ctx.stroke();
      ctx.fillText(v.toPrecision(3), 4, Y(v) + 4);
    }
    ctx.fillText(`step ${x0}`, pad.l, hgt - 6);
    const right = `step ${x1}`;
    ctx.fillText(right, w - pad.r - ctx.measureText(right).width, hgt - 6);
    for (const [name, pts] of visible) {
      // a series keeps its colour when others are shown or hidden
      const color = COLORS[[...this.series.keys()].indexOf(name) % COLORS.length];
      ctx.strokeStyle = color;
      ctx.lineWidth = 2;
      ctx.beginPath();
      pts.forEach(([x, y], k) => (k ? ctx.lineTo(X(x), Y(y)) : ctx.moveTo(X(x), Y(y))));
      ctx.stroke();
      const sw = document.createElement("i");
      sw.style.background = color;
      const item = document.createElement("span");
      item.dataset.key = name;
      item.append(sw, `${this.label(name)} ${pts[pts.length - 1][1].toPrecision(3)}`);
      this.legend.append(item);
    }
  }
}
