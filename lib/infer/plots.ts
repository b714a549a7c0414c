/**
 * Small dependency-free SVG charts for eval reports: quality against skip ratio (routers
 * vs static drop) and each routed layer's executed fraction.
 */
export interface Series {
  label: string;
  color: string;
  points: { x: number; y: number }[];
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

export function lineChartSvg(title: string, xLabel: string, yLabel: string, series: Series[]): string {
  const W = 600, H = 360, L = 64, R = 180, T = 40, B = 48;
  const xs = series.flatMap((s) => s.points.map((p) => p.x));
  const ys = series.flatMap((s) => s.points.map((p) => p.y)).filter(Number.isFinite);
  const x0 = Math.min(0, ...xs), x1 = Math.max(0.01, ...xs);
  let y0 = Math.min(...ys), y1 = Math.max(...ys);
  if (!(y1 > y0)) {
    y0 -= 1;
    y1 += 1;
  }
  const pad = (y1 - y0) * 0.08;
  y0 -= pad;
  y1 += pad;
  const px = (x: number) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const py = (y: number) => H - B - ((y - y0) / (y1 - y0)) * (H - T - B);
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2 - R / 2}" y="22" text-anchor="middle" font-size="14">${esc(title)}</text>`,
    `<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="#333"/>`,
    `<line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="#333"/>`,
    `<text x="${(L + W - R) / 2}" y="${H - 12}" text-anchor="middle">${esc(xLabel)}</text>`,
    `<text x="16" y="${(T + H - B) / 2}" text-anchor="middle" transform="rotate(-90 16 ${(T + H - B) / 2})">${esc(yLabel)}</text>`,
  ];
  for (let i = 0; i <= 4; i++) {
    const xv = x0 + ((x1 - x0) * i) / 4, yv = y0 + ((y1 - y0) * i) / 4;
    parts.push(`<text x="${px(xv)}" y="${H - B + 16}" text-anchor="middle">${(xv * 100).toFixed(0)}%</text>`);
    parts.push(`<text x="${L - 6}" y="${py(yv) + 4}" text-anchor="end">${yv.toPrecision(4)}</text>`);
    parts.push(`<line x1="${L}" y1="${py(yv)}" x2="${W - R}" y2="${py(yv)}" stroke="#eee"/>`);
  }
  series.forEach((s, i) => {
    const pts = [...s.points].sort((a, b) => a.x - b.x);
    if (pts.length > 1) parts.push(`<polyline fill="none" stroke="${s.color}" stroke-width="2" points="${pts.map((p) => `${px(p.x)},${py(p.y)}`).join(' ')}"/>`);
    for (const p of pts) parts.push(`<circle cx="${px(p.x)}" cy="${py(p.y)}" r="4" fill="${s.color}"/>`);
    parts.push(`<rect x="${W - R + 12}" y="${T + i * 20}" width="12" height="12" fill="${s.color}"/><text x="${W - R + 30}" y="${T + i * 20 + 10}">${esc(s.label)}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}

export function barChartSvg(title: string, bars: { label: string; value: number }[], yLabel: string): string {
  const W = Math.max(360, 80 + bars.length * 36), H = 300, L = 56, B = 48, T = 40;
  const bw = (W - L - 20) / Math.max(1, bars.length);
  const py = (v: number) => H - B - v * (H - T - B);
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="14">${esc(title)}</text>`,
    `<line x1="${L}" y1="${H - B}" x2="${W - 10}" y2="${H - B}" stroke="#333"/>`,
    `<text x="14" y="${(T + H - B) / 2}" text-anchor="middle" transform="rotate(-90 14 ${(T + H - B) / 2})">${esc(yLabel)}</text>`,
  ];
  for (let i = 0; i <= 4; i++) parts.push(`<text x="${L - 6}" y="${py(i / 4) + 4}" text-anchor="end">${i * 25}%</text>`);
  bars.forEach((b, i) => {
    const x = L + i * bw + bw * 0.15;
    parts.push(`<rect x="${x}" y="${py(b.value)}" width="${bw * 0.7}" height="${H - B - py(b.value)}" fill="#3b7dd8"/>`);
    parts.push(`<text x="${x + bw * 0.35}" y="${H - B + 16}" text-anchor="middle">${esc(b.label)}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}
