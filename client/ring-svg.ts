// client/ring-svg.ts: a picture of the ring, as a self-contained SVG.
//
// The circle starts at the top (hash 0) and runs clockwise to 2^128. Each arc
// has the colour of the node that owns it: the node of the point at its
// clockwise end. Ids sit just inside the circle at their own hash, in their
// owner's colour. Colour is never the only cue: every node has a key letter
// (A, B, C ...) on its points and in the legend, and the palette is
// Okabe-Ito, chosen to stay distinct for colour-blind readers. Past eight
// nodes the colours repeat, and the letters tell the nodes apart.

import { fraction, position, type HashRing } from '../ring.ts';
import { shares as sharesOf } from './balance.ts';
import { plural } from './words.ts';

const RADIUS = 260;
const BAND = 24; // the width of the coloured ring
const MARGIN = 64; // room outside the ring for point labels and ticks
const TOP = 60; // title and subtitle
const ROW = 22; // one legend row
const FONT = 13;
// Past these counts, marks would merge: points become ticks, ids lose labels and lines.
const MAX_POINT_MARKS = 60;
const MAX_ID_LABELS = 100;
const MAX_ID_LINES = 100;

// Okabe and Ito (2008), "Color Universal Design": eight colours that stay
// apart under the common colour-vision deficiencies (test/picture.test.ts checks).
export const PALETTE = ['#0072B2', '#E69F00', '#009E73', '#CC79A7', '#56B4E9', '#D55E00', '#F0E442', '#000000'];

/** A node's key on the ring: A ... Z, then AA, AB ... */
export function key(i: number): string {
  return (i >= 26 ? key(Math.floor(i / 26) - 1) : '') + String.fromCharCode(65 + (i % 26));
}

type Box = { x: number; y: number; w: number; h: number };
type Node = { node: string; key: string; colour: string };

/** Where things go: the ring's centre, and the labels placed so far. */
class Canvas {
  readonly cx = MARGIN + RADIUS + 20;
  readonly cy = TOP + MARGIN + RADIUS;
  #placed: Box[] = [];

  /** x, y of fraction f of the way round, clockwise from the top, at radius r. */
  xy(f: number, r: number): [number, number] {
    return [round(this.cx + r * Math.sin(f * 2 * Math.PI)), round(this.cy - r * Math.cos(f * 2 * Math.PI))];
  }

  /** Keeps labels off a mark. */
  reserve(box: Box): void {
    this.#placed.push(box);
  }

  /**
   * A label centred at the first of `spots` where it overlaps nothing placed
   * before; undefined where there is no such spot: left out, never printed over.
   */
  label(text: string, spots: Array<[number, number]>, size = FONT): string | undefined {
    const w = width(text, size);
    for (const [x, y] of spots) {
      const box = { x: x - w / 2, y: y - size * 0.6, w, h: size * 1.2 };
      if (this.#placed.some((b) => overlap(b, box))) continue;
      this.#placed.push(box);
      return `<text x="${x}" y="${y}" text-anchor="middle" dominant-baseline="middle"${size === FONT ? '' : ` font-size="${size}"`}>${xml(text)}</text>`;
    }
    return undefined;
  }

  /** Spots around fraction f at radius r: nearer the centre or further out, and a little to either side. */
  around(f: number, r: number, step: number): Array<[number, number]> {
    const turn = step / (2 * Math.PI * r);
    return [[0, -step], [0, step], [-turn, 0], [turn, 0], [-turn, -step], [turn, -step]].map(([df, dr]) => this.xy(f + df!, r + dr!));
  }
}

export function ringSvg(ring: HashRing, ids: readonly string[]): string {
  const nodes: Node[] = ring.nodes.map((node, i) => ({ node, key: key(i), colour: PALETTE[i % PALETTE.length]! }));
  const of = new Map(nodes.map((n) => [n.node, n]));
  const canvas = new Canvas();
  const owning = ids.map((id) => ({ id, f: fraction(position(id)), point: ring.pointOf(id) }));
  const body = [...orientation(canvas), ...arcs(ring, of, canvas)];

  // Lines from ids to the points that own them, while there are few enough to follow.
  if (owning.length <= MAX_ID_LINES) {
    for (const { id, f, point } of owning) {
      const [x0, y0] = canvas.xy(f, idRadius(id));
      const [x1, y1] = canvas.xy(fraction(point.position), RADIUS);
      body.push(`<line class="link" x1="${x0}" y1="${y0}" x2="${x1}" y2="${y1}" stroke="#999" stroke-width="0.8"/>`);
    }
  }
  const marks = ring.points.length <= MAX_POINT_MARKS;
  body.push(...points(ring, of, canvas, marks));

  // The ids, in their owner's colour, each with a tooltip; labelled where they fit.
  for (const { id, f, point } of owning) {
    const { node, colour } = of.get(point.node)!;
    const [x, y] = canvas.xy(f, idRadius(id));
    const r = owning.length <= 40 ? 6 : 2.5;
    body.push(`<circle class="id" data-id="${xml(id)}" data-node="${xml(node)}" cx="${x}" cy="${y}" r="${r}" fill="${colour}" stroke="#222" stroke-width="0.8"><title>${xml(`${id} → ${node}`)}</title></circle>`);
    canvas.reserve({ x: x - r, y: y - r, w: 2 * r, h: 2 * r });
  }
  let unlabelled = 0;
  if (owning.length <= MAX_ID_LABELS) {
    for (const { id, f } of owning) {
      const text = canvas.label(id, canvas.around(f, idRadius(id), 14), 11);
      if (text) body.push(text);
      else unlabelled++;
    }
  }

  const notes = [
    'Hash 0 is at the top; a key belongs to the first node point clockwise from it.',
    ...(marks ? [] : [`Node points are ticks outside the ring (${plural(ring.points.length, 'point')}).`]),
    ...(owning.length > MAX_ID_LABELS ? ['Ids are dots without labels; hover one for its id and node.'] : unlabelled > 0 ? [`${plural(unlabelled, 'id label')} left out where labels would overlap.`] : []),
    ...(nodes.length > PALETTE.length ? [`Colours repeat past ${PALETTE.length} nodes: the letters tell the nodes apart.`] : []),
  ];
  return page(ring, nodes, owning.map((o) => o.point.node), body, notes, canvas);
}

/** Hash 0 at the top, and an arrow that shows which way is clockwise. */
function orientation(canvas: Canvas): string[] {
  const { cx, cy } = canvas;
  const [x0, y0] = canvas.xy(0.015, RADIUS + 40);
  const [x1, y1] = canvas.xy(0.06, RADIUS + 40);
  canvas.reserve({ x: x0 - 4, y: y0 - 8, w: x1 - x0 + 12, h: y1 - y0 + 16 });
  return [
    `<line x1="${cx}" y1="${cy - RADIUS - 18}" x2="${cx}" y2="${cy - RADIUS + 18}" stroke="#222" stroke-width="1.5"/>`,
    canvas.label('0', [[cx, cy - RADIUS - 30]])!,
    `<path d="M${x0} ${y0}A${RADIUS + 40} ${RADIUS + 40} 0 0 1 ${x1} ${y1}" fill="none" stroke="#222" stroke-width="1.5" marker-end="url(#arrow)"/>`,
  ];
}

/** The node points: circles with their key beside them while few, ticks outside the band when many. */
function points(ring: HashRing, of: Map<string, Node>, canvas: Canvas, marks: boolean): string[] {
  const out: string[] = [];
  for (const p of ring.points) {
    const f = fraction(p.position);
    const { key: k, node } = of.get(p.node)!;
    if (!marks) {
      const [x0, y0] = canvas.xy(f, RADIUS + BAND / 2 + 2);
      const [x1, y1] = canvas.xy(f, RADIUS + BAND / 2 + 9);
      out.push(`<line class="point" data-node="${xml(node)}" x1="${x0}" y1="${y0}" x2="${x1}" y2="${y1}" stroke="#222" stroke-width="1"/>`);
      continue;
    }
    const [x, y] = canvas.xy(f, RADIUS);
    out.push(`<circle class="point" data-node="${xml(node)}" cx="${x}" cy="${y}" r="6" fill="white" stroke="#222" stroke-width="2"/>`);
    const text = canvas.label(k, canvas.around(f, RADIUS + BAND / 2 + 28, 14));
    if (text) out.push(text);
  }
  return out;
}

/** The whole picture: title, ring, then under it the legend (one row per node) and the notes. Sized to fit them. */
function page(ring: HashRing, nodes: Node[], owners: string[], body: string[], notes: string[], canvas: Canvas): string {
  const shares = sharesOf(ring);
  const count = new Map(ring.nodes.map((n) => [n, 0]));
  for (const node of owners) count.set(node, count.get(node)! + 1);
  const share = (node: string) => `${(shares.get(node)! * 100).toFixed(1)}% of the ring${owners.length ? ` · ${plural(count.get(node)!, 'id')}` : ''}`;
  const legendTop = canvas.cy + RADIUS + MARGIN;
  const legend = nodes.flatMap(({ node, key: k, colour }, i) => {
    const y = legendTop + i * ROW;
    return [
      `<rect class="swatch" data-node="${xml(node)}" x="20" y="${y}" width="18" height="18" fill="${colour}" stroke="#222" stroke-width="0.8"/>`,
      `<text x="46" y="${y + 9}" dominant-baseline="middle"><tspan font-weight="bold">${k}</tspan>  ${xml(node)} · ${share(node)}</text>`,
    ];
  });
  const notesTop = legendTop + nodes.length * ROW + 16;
  const height = notesTop + notes.length * ROW;
  const w = round(Math.max(2 * canvas.cx, ...nodes.map(({ node, key: k }) => 46 + width(`${k}  ${node} · ${share(node)}`, FONT) + 20), ...notes.map((n) => 20 + width(n, FONT) + 20)));
  const title = `${plural(nodes.length, 'node')} × ${plural(ring.replicas, 'replica')}${owners.length ? `, ${plural(owners.length, 'id')}` : ''}`;
  const desc = `A consistent-hash ring. ${notes[0]} Each node's share of the ring: ${nodes.map(({ node, key: k }) => `${k} ${node} ${(shares.get(node)! * 100).toFixed(1)}%`).join(', ')}.`;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${height}" viewBox="0 0 ${w} ${height}" font-family="sans-serif" font-size="${FONT}" role="img" aria-labelledby="title desc">`,
    `<title id="title">Consistent-hash ring: ${title}</title>`,
    `<desc id="desc">${xml(desc)}</desc>`,
    `<defs><marker id="arrow" viewBox="0 0 10 10" refX="5" refY="5" markerWidth="8" markerHeight="8" orient="auto"><path d="M0 0L10 5L0 10z" fill="#222"/></marker></defs>`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${canvas.cx}" y="30" text-anchor="middle" font-size="17">${title}</text>`,
    ...body,
    ...legend,
    ...notes.map((note, i) => `<text x="20" y="${notesTop + i * ROW + 9}" dominant-baseline="middle" fill="#555">${xml(note)}</text>`),
    '</svg>',
  ].join('\n') + '\n';
}

/**
 * The arcs: one path per run of neighbouring points with the same owner, so
 * that a node's territory is one stroke, with no seams inside it.
 */
function arcs(ring: HashRing, of: Map<string, Node>, canvas: Canvas): string[] {
  const xy = (f: number, r: number) => canvas.xy(f, r);
  const points = ring.points;
  const owners = new Set(points.map((p) => p.node));
  if (owners.size === 1) {
    const [node] = owners;
    const [x, y] = xy(0, 0);
    return [`<circle class="arc" data-node="${xml(node!)}" cx="${x}" cy="${y}" r="${RADIUS}" fill="none" stroke="${of.get(node!)!.colour}" stroke-width="${BAND}"/>`];
  }
  // Start at a change of owner, so that no run wraps past the starting point.
  const n = points.length;
  const start = points.findIndex((p, i) => p.node !== points[(i + n - 1) % n]!.node);
  const out: string[] = [];
  let from = fraction(points[(start + n - 1) % n]!.position);
  for (let i = 0; i < n; i++) {
    const p = points[(start + i) % n]!;
    const next = points[(start + i + 1) % n]!;
    if (next.node === p.node && i < n - 1) continue;
    const to = fraction(p.position);
    const span = (to - from + 1) % 1;
    const [x0, y0] = xy(from, RADIUS);
    const [x1, y1] = xy(to, RADIUS);
    out.push(
      `<path class="arc" data-node="${xml(p.node)}" d="M${x0} ${y0}A${RADIUS} ${RADIUS} 0 ${span > 0.5 ? 1 : 0} 1 ${x1} ${y1}" fill="none" stroke="${of.get(p.node)!.colour}" stroke-width="${BAND}"/>`,
    );
    from = to;
  }
  return out;
}

/** Ids sit in a band inside the circle, spread by their hash so that close neighbours overlap less. */
function idRadius(id: string): number {
  return RADIUS - BAND / 2 - 30 - 70 * fraction(position(`${id}#r`));
}

/** A generous estimate of a text's width: the test in a real browser holds us to it. */
function width(text: string, size: number): number {
  return [...text].length * size * 0.7;
}

function overlap(a: Box, b: Box): boolean {
  return a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
}

function round(n: number): number {
  return Math.round(n * 10) / 10;
}

function xml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
