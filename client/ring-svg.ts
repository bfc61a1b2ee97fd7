// client/ring-svg.ts: a picture of the ring, as a self-contained SVG.
//
// The circle starts at 12 o'clock (hash 0) and runs clockwise to 2^128. Each
// arc has the colour of the node that owns it: the node of the point at its
// clockwise end. Ids sit just inside the circle at their own hash, in their
// owner's colour.

import { fraction, position, type HashRing } from '../ring.ts';
import { shares as sharesOf } from './balance.ts';

const SIZE = 760;
const CENTER = SIZE / 2;
const RADIUS = 290;
const LEGEND_X = SIZE + 20;
// Past these counts, labels would overlap into soup: draw marks, not words.
const MAX_POINT_LABELS = 30;
const MAX_ID_LABELS = 40;
const MAX_ID_LINES = 100;

// Tableau 10: distinct, and readable by most colour-blind eyes.
const PALETTE = ['#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#edc948', '#b07aa1', '#ff9da7', '#9c755f', '#bab0ac'];

/** The colour of the i-th node: the palette first, then hues a golden angle apart. */
function colour(i: number): string {
  return PALETTE[i] ?? `hsl(${Math.round((i * 137.508) % 360)} 60% 50%)`;
}

export function ringSvg(ring: HashRing, ids: readonly string[]): string {
  const colourOf = new Map(ring.nodes.map((node, i) => [node, colour(i)]));
  const points = ring.points;
  const out: string[] = [];
  const width = LEGEND_X + 340;
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${SIZE}" viewBox="0 0 ${width} ${SIZE}" font-family="sans-serif" font-size="13">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${CENTER}" y="28" text-anchor="middle" font-size="17">${ring.nodes.length} nodes × ${ring.replicas} ${ring.replicas === 1 ? 'replica' : 'replicas'}${ids.length ? `, ${ids.length} ids` : ''}</text>`,
    `<text x="${CENTER}" y="${SIZE - 14}" text-anchor="middle" fill="#555">hash 0 is at the top; a key belongs to the first node point clockwise from it</text>`,
    `<line x1="${CENTER}" y1="${CENTER - RADIUS - 18}" x2="${CENTER}" y2="${CENTER - RADIUS + 18}" stroke="#222" stroke-width="1.5"/>`,
  );

  // The arcs, each in its owner's colour.
  if (points.length === 1) {
    out.push(`<circle class="arc" cx="${CENTER}" cy="${CENTER}" r="${RADIUS}" fill="none" stroke="${colourOf.get(points[0]!.node)}" stroke-width="24"/>`);
  }
  if (points.length > 1) {
    points.forEach((p, i) => {
      const from = fraction(points[(i + points.length - 1) % points.length]!.position);
      const to = fraction(p.position);
      const span = (to - from + 1) % 1;
      const [x0, y0] = xy(from, RADIUS);
      const [x1, y1] = xy(to, RADIUS);
      out.push(
        `<path class="arc" data-node="${xml(p.node)}" d="M${x0} ${y0}A${RADIUS} ${RADIUS} 0 ${span > 0.5 ? 1 : 0} 1 ${x1} ${y1}" fill="none" stroke="${colourOf.get(p.node)}" stroke-width="24"/>`,
      );
    });
  }

  // Lines from ids to the points that own them, while there are few enough to follow.
  const owning = ids.map((id) => {
    const point = ring.pointOf(id);
    return { id, f: fraction(position(id)), point, node: point.node };
  });
  if (owning.length <= MAX_ID_LINES) {
    for (const { id, f, point } of owning) {
      const [x0, y0] = xy(f, idRadius(id));
      const [x1, y1] = xy(fraction(point.position), RADIUS);
      out.push(`<line class="link" x1="${x0}" y1="${y0}" x2="${x1}" y2="${y1}" stroke="#999" stroke-width="0.8"/>`);
    }
  }

  // The node points, labelled while there are few.
  const labelPoints = points.length <= MAX_POINT_LABELS;
  for (const p of points) {
    const f = fraction(p.position);
    const [x, y] = xy(f, RADIUS);
    out.push(
      labelPoints
        ? `<circle class="point" data-node="${xml(p.node)}" cx="${x}" cy="${y}" r="7" fill="white" stroke="#222" stroke-width="2"/>`
        : `<circle class="point" data-node="${xml(p.node)}" cx="${x}" cy="${y}" r="1.6" fill="#222"/>`,
    );
    if (labelPoints) {
      const [lx, ly] = xy(f, RADIUS + 30);
      out.push(`<text x="${lx}" y="${ly}" text-anchor="${anchor(f)}" dominant-baseline="middle">${xml(p.node)}</text>`);
    }
  }

  // The ids, in their owner's colour.
  const labelIds = owning.length <= MAX_ID_LABELS;
  for (const { id, f, node } of owning) {
    const [x, y] = xy(f, idRadius(id));
    out.push(`<circle class="id" data-id="${xml(id)}" data-node="${xml(node)}" cx="${x}" cy="${y}" r="${labelIds ? 6 : 2.5}" fill="${colourOf.get(node)}"/>`);
    if (labelIds) {
      const [lx, ly] = xy(f, idRadius(id) - 16);
      out.push(`<text x="${lx}" y="${ly}" text-anchor="middle" dominant-baseline="middle" font-size="12">${xml(id)}</text>`);
    }
  }

  // The legend: each node's colour and its share of the ring (and of the ids).
  const shares = sharesOf(ring);
  const perNode = new Map(ring.nodes.map((n) => [n, 0]));
  for (const { node } of owning) perNode.set(node, perNode.get(node)! + 1);
  const rowHeight = Math.min(26, (SIZE - 90) / Math.max(1, ring.nodes.length));
  out.push(`<text x="${LEGEND_X}" y="60" font-weight="bold">node · share of ring${ids.length ? ' · ids' : ''}</text>`);
  ring.nodes.forEach((node, i) => {
    const y = 80 + i * rowHeight;
    const share = `${(shares.get(node)! * 100).toFixed(1)}%`;
    out.push(
      `<rect class="swatch" data-node="${xml(node)}" x="${LEGEND_X}" y="${y}" width="16" height="16" fill="${colourOf.get(node)}"/>`,
      `<text x="${LEGEND_X + 24}" y="${y + 13}">${xml(node)} · ${share}${ids.length ? ` · ${perNode.get(node)}` : ''}</text>`,
    );
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}

/** Ids sit in a band inside the circle, spread by their hash so that close neighbours overlap less. */
function idRadius(id: string): number {
  return RADIUS - 40 - 70 * fraction(position(`${id}#r`));
}

/** x, y of fraction f of the way round, clockwise from 12 o'clock. */
function xy(f: number, r: number): [number, number] {
  const angle = f * 2 * Math.PI;
  return [round(CENTER + r * Math.sin(angle)), round(CENTER - r * Math.cos(angle))];
}

function anchor(f: number): string {
  return f < 0.02 || (f > 0.48 && f < 0.52) || f > 0.98 ? 'middle' : f < 0.5 ? 'start' : 'end';
}

function round(n: number): number {
  return Math.round(n * 10) / 10;
}

function xml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
