// lab/ring-svg.ts: a picture of the ring, as a self-contained SVG.
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
import { plural } from '../api/words.ts';
import { BAND, Canvas, CENTRED, EDGE, FONT, INNER, MARGIN, OUTER, RADIUS, round, tag, TITLE_Y, width, xml } from './ring-canvas.ts';
import { changes } from './ring-changes.ts';

// The legend and the notes, under the ring.
const ROW = 22; // one legend or note row
const NOTES_GAP = 16; // between the legend and the notes
const SWATCH = 18; // a legend row's square of colour
const LEGEND_TEXT_X = EDGE + SWATCH + 8; // a legend row's text, just right of its swatch
const ROW_MIDDLE = SWATCH / 2; // a row's text is level with the middle of a swatch
const NOTE = { ...CENTRED, fill: '#555' }; // a note, quieter than the legend
const TITLE_FONT = 17;
const ID_FONT = 11;

// The marks.
const INK = '#222';
const OUTLINE = 0.8; // the stroke round a swatch or an id's dot, and of the lines from ids to their points
const POINT = { radius: 6, stroke: 2 }; // a node point drawn as a circle
const TICK = { from: OUTER + 2, to: OUTER + 9, stroke: 1 }; // a node point drawn as a tick, just outside the band
const KEY_AT = OUTER + 28; // where a point's key letter goes
const ID_RADIUS = { few: 6, many: 2.5 }; // an id's dot: big enough to read while there are few
const ID_BAND = { inset: 30, depth: 70 }; // ids sit this far inside the band, spread over this depth
const ZERO = { tick: 18, label: RADIUS + 30 }; // at hash 0: half the tick's length, and the "0" above it
const ARROW = { radius: RADIUS + 40, from: 0.015, to: 0.06, stroke: 1.5 }; // the clockwise arrow, near 0
const ARROW_HEAD = 8; // the marker's size
const ARROW_TAIL = 4; // room kept clear behind the arrow's start
const MOVING_RADIUS = INNER - 6; // a reshard's arcs that change owner, just inside the band
const MOVING_WIDTH = 8;
const WALK_RADIUS = INNER - 16; // an id's walk to its owner's point, inside those
const WALK_STROKE = 2;
// Past these counts, marks would merge: points become ticks, ids shrink, and lose labels and lines.
const MAX_POINT_MARKS = 60;
const MAX_BIG_IDS = 40;
const MAX_ID_LABELS = 100;
const MAX_ID_LINES = 100;

// Okabe and Ito (2008), "Color Universal Design": eight colours that stay
// apart under the common colour-vision deficiencies (test/lab/picture.test.ts checks).
export const PALETTE = ['#0072B2', '#E69F00', '#009E73', '#CC79A7', '#56B4E9', '#D55E00', '#F0E442', '#000000'];

const READING = 'Hash 0 is at the top; a key belongs to the first node point clockwise from it.';
const MOVING = 'A reshard runs: the thin inner arcs change owner, to the node of their colour.';
const WALK = "The arrow inside the band: the id's walk clockwise from its hash to its owner's point.";

/** A node's key on the ring: A ... Z, then AA, AB ... */
export function key(i: number): string {
  return (i >= 26 ? key(Math.floor(i / 26) - 1) : '') + String.fromCharCode(65 + (i % 26));
}

type Node = { node: string; key: string; colour: string };
type Owned = { id: string; f: number; point: { position: string; node: string } }; // an id, where it is, and its owner

/**
 * What else the picture may show: the ring a reshard moves to, whose arcs
 * that change owner are drawn inside the band; and each id's walk clockwise
 * from its hash to its owner's point.
 */
export type Extras = { next?: HashRing; walk?: boolean };

/** Every node of both rings, in the order they joined: each with its key letter and colour. */
export function nodesOf(ring: HashRing, next?: HashRing): Node[] {
  const names = [...new Set([...ring.nodes, ...(next?.nodes ?? [])])];
  return names.map((node, i) => ({ node, key: key(i), colour: PALETTE[i % PALETTE.length]! }));
}

/** The picture, drawn in order so that later marks lie on top and labels keep off what came before. */
export function ringSvg(ring: HashRing, ids: readonly string[], { next, walk = false }: Extras = {}): string {
  const nodes = nodesOf(ring, next);
  const of = new Map(nodes.map((n) => [n.node, n]));
  const canvas = new Canvas();
  const owned: Owned[] = ids.map((id) => ({ id, f: fraction(position(id)), point: ring.pointOf(id) }));
  const marked = ring.points.length <= MAX_POINT_MARKS;
  const body = [
    ...orientation(canvas),
    ...arcs(ring, of, canvas),
    ...(next === undefined ? [] : moving(ring, next, of, canvas)),
    ...(walk ? owned.flatMap((o) => walkOf(o, canvas)) : []),
    ...(owned.length <= MAX_ID_LINES ? links(owned, canvas) : []),
    ...points(ring.points, of, canvas, marked),
    // A node that joins has no arc yet: its points, dashed, show where its arcs will end.
    ...(next === undefined ? [] : points(next.points.filter((p) => !ring.nodes.includes(p.node)), of, canvas, marked, true)),
    ...owned.map((o) => idDot(o, of.get(o.point.node)!, canvas, owned.length <= MAX_BIG_IDS)),
  ];
  let unlabelled = 0;
  if (owned.length <= MAX_ID_LABELS) {
    for (const { id, f } of owned) {
      const text = canvas.label(id, canvas.around(f, idRadius(id)), ID_FONT);
      if (text) body.push(text);
      else unlabelled++;
    }
  }
  const notes = [...notesOf(ring, nodes.length, owned.length, unlabelled), ...(next ? [MOVING] : []), ...(walk ? [WALK] : [])];
  return page(ring, next, nodes, owned.map((o) => o.point.node), body, notes, canvas);
}

/** Under the legend: how to read the picture, then what it leaves out or repeats. */
function notesOf(ring: HashRing, nodes: number, ids: number, unlabelled: number): string[] {
  const out = [READING];
  const points = ring.points.length;
  if (points > MAX_POINT_MARKS) out.push(`Node points are ticks outside the ring (${plural(points, 'point')}).`);
  if (ids > MAX_ID_LABELS) out.push('Ids are dots without labels; hover one for its id and node.');
  else if (unlabelled > 0) out.push(`${plural(unlabelled, 'id label')} left out where labels would overlap.`);
  if (nodes > PALETTE.length) {
    out.push(`Colours repeat past ${PALETTE.length} nodes: the letters tell the nodes apart.`);
  }
  return out;
}

/** Hash 0 at the top, and an arrow that shows which way is clockwise. */
function orientation(canvas: Canvas): string[] {
  const { cx, cy } = canvas;
  const [x0, y0] = canvas.xy(ARROW.from, ARROW.radius);
  const [x1, y1] = canvas.xy(ARROW.to, ARROW.radius);
  // The arrow runs right and down: its box reaches behind its tail, and past its end and either side by the head.
  const [tail, head] = [ARROW_TAIL, ARROW_HEAD];
  canvas.reserve({ x: x0 - tail, y: y0 - head, w: x1 - x0 + (tail + head), h: y1 - y0 + 2 * head });
  const stroke = { stroke: INK, 'stroke-width': ARROW.stroke };
  const d = `M${x0} ${y0}A${ARROW.radius} ${ARROW.radius} 0 0 1 ${x1} ${y1}`;
  return [
    tag('line', { x1: cx, y1: cy - RADIUS - ZERO.tick, x2: cx, y2: cy - RADIUS + ZERO.tick, ...stroke }),
    canvas.label('0', [[cx, cy - ZERO.label]])!,
    tag('path', { d, fill: 'none', ...stroke, 'marker-end': 'url(#arrow)' }),
  ];
}

/**
 * The arcs: one path per run of neighbouring points with the same owner, so
 * that a node's territory is one stroke, with no seams inside it.
 */
function arcs(ring: HashRing, of: Map<string, Node>, canvas: Canvas): string[] {
  const points = ring.points;
  const band = (node: string) => ({ fill: 'none', stroke: of.get(node)!.colour, 'stroke-width': BAND });
  const owners = new Set(points.map((p) => p.node));
  if (owners.size === 1) {
    const node = points[0]!.node;
    const [x, y] = canvas.xy(0, 0);
    return [tag('circle', { class: 'arc', 'data-node': node, cx: x, cy: y, r: RADIUS, ...band(node) })];
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
    out.push(tag('path', { class: 'arc', 'data-node': p.node, d: canvas.arc(from, to, RADIUS), ...band(p.node) }));
    from = to;
  }
  return out;
}

/** While a reshard runs: a thin arc inside the band on every arc that changes owner, in its new owner's colour. */
function moving(ring: HashRing, next: HashRing, of: Map<string, Node>, canvas: Canvas): string[] {
  return changes(ring, next).map(({ from, to, was, now }) => {
    const d = canvas.arc(fraction(from), fraction(to), MOVING_RADIUS);
    const stroke = { fill: 'none', stroke: of.get(now)!.colour, 'stroke-width': MOVING_WIDTH };
    return tag('path', { class: 'moving', 'data-from': was, 'data-to': now, d, ...stroke });
  });
}

/** An id's walk: a tick at its hash across the band, and an arrow clockwise from there to its owner's point. */
function walkOf({ id, f, point }: Owned, canvas: Canvas): string[] {
  const [x1, y1] = canvas.xy(f, OUTER);
  const [x2, y2] = canvas.xy(f, INNER);
  const stroke = { stroke: INK, 'stroke-width': WALK_STROKE };
  return [
    tag('line', { class: 'hash', 'data-id': id, x1, y1, x2, y2, ...stroke }),
    tag('path', { class: 'walk', 'data-id': id, 'data-node': point.node, d: canvas.arc(f, fraction(point.position), WALK_RADIUS), fill: 'none', ...stroke, 'marker-end': 'url(#arrow)' }),
  ];
}

/** Lines from ids to the points that own them, for when there are few enough to follow. */
function links(owned: Owned[], canvas: Canvas): string[] {
  return owned.map(({ id, f, point }) => {
    const [x1, y1] = canvas.xy(f, idRadius(id));
    const [x2, y2] = canvas.xy(fraction(point.position), RADIUS);
    return tag('line', { class: 'link', x1, y1, x2, y2, stroke: '#999', 'stroke-width': OUTLINE });
  });
}

/** The node points: circles with their key beside them while few, ticks outside the band when many. */
function points(all: Array<{ position: string; node: string }>, of: Map<string, Node>, canvas: Canvas, marked: boolean, joining = false): string[] {
  const out: string[] = [];
  const dashed = joining ? { 'stroke-dasharray': '2 2' } : {};
  for (const p of all) {
    const f = fraction(p.position);
    const { key: k, node } = of.get(p.node)!;
    if (!marked) {
      const [x1, y1] = canvas.xy(f, TICK.from);
      const [x2, y2] = canvas.xy(f, TICK.to);
      const tick = { x1, y1, x2, y2, stroke: INK, 'stroke-width': TICK.stroke };
      out.push(tag('line', { class: joining ? 'joining' : 'point', 'data-node': node, ...tick, ...dashed }));
      continue;
    }
    const [cx, cy] = canvas.xy(f, RADIUS);
    const circle = { cx, cy, r: POINT.radius, fill: 'white', stroke: INK, 'stroke-width': POINT.stroke, ...dashed };
    out.push(tag('circle', { class: joining ? 'joining' : 'point', 'data-node': node, ...circle }));
    const text = canvas.label(k, canvas.around(f, KEY_AT));
    if (text) out.push(text);
  }
  return out;
}

/** An id's dot, in its owner's colour, with a tooltip that names both. */
function idDot({ id, f }: Owned, { node, colour }: Node, canvas: Canvas, big: boolean): string {
  const [cx, cy] = canvas.xy(f, idRadius(id));
  const r = big ? ID_RADIUS.few : ID_RADIUS.many;
  canvas.reserve({ x: cx - r, y: cy - r, w: 2 * r, h: 2 * r });
  const dot = { cx, cy, r, fill: colour, stroke: INK, 'stroke-width': OUTLINE };
  const tooltip = tag('title', {}, xml(`${id} → ${node}`));
  return tag('circle', { class: 'id', 'data-id': id, 'data-node': node, ...dot }, tooltip);
}

/** The whole picture: title, ring, then under it the legend (one row per node) and the notes. Sized to fit them. */
function page(
  ring: HashRing,
  next: HashRing | undefined,
  nodes: Node[],
  owners: string[],
  body: string[],
  notes: string[],
  canvas: Canvas,
): string {
  const shares = sharesOf(ring);
  const percent = (node: string, of = shares) => `${((of.get(node) ?? 0) * 100).toFixed(1)}%`;
  const count = new Map(nodes.map((n) => [n.node, 0]));
  for (const node of owners) count.set(node, count.get(node)! + 1);
  const ids = (node: string) => (owners.length ? ` · ${plural(count.get(node)!, 'id')}` : '');
  const after = next && sharesOf(next);
  // While a reshard runs, each node's share now and after it, or that it joins or leaves.
  const share = (node: string) => {
    if (after === undefined) return `${percent(node)} of the ring`;
    if (!shares.has(node)) return `joins with ${percent(node, after)} of the ring`;
    return after.has(node) ? `${percent(node)} → ${percent(node, after)} of the ring` : `${percent(node)} of the ring, leaves`;
  };
  const legend = nodes.map((n) => ({ ...n, rest: `  ${n.node} · ${share(n.node)}${ids(n.node)}` }));
  const legendTop = canvas.cy + RADIUS + MARGIN;
  const notesTop = legendTop + nodes.length * ROW + NOTES_GAP;
  const height = notesTop + notes.length * ROW;
  const w = round(Math.max(
    2 * canvas.cx,
    ...legend.map(({ key: k, rest }) => LEGEND_TEXT_X + width(k + rest, FONT) + EDGE),
    ...notes.map((n) => EDGE + width(n, FONT) + EDGE),
  ));
  const { title, desc } = heading(ring, next, nodes, owners.length, percent);
  const size = { width: w, height, viewBox: `0 0 ${w} ${height}` };
  const font = { 'font-family': 'sans-serif', 'font-size': FONT };
  const content = [
    tag('title', { id: 'title' }, `Consistent-hash ring: ${title}`),
    tag('desc', { id: 'desc' }, xml(desc)),
    tag('defs', {}, ARROW_MARKER),
    tag('rect', { width: '100%', height: '100%', fill: 'white' }),
    tag('text', { x: canvas.cx, y: TITLE_Y, 'text-anchor': 'middle', 'font-size': TITLE_FONT }, title),
    ...body,
    ...legend.flatMap((row, i) => legendRow(row, legendTop + i * ROW)),
    ...notes.map((note, i) => tag('text', { x: EDGE, y: notesTop + i * ROW + ROW_MIDDLE, ...NOTE }, xml(note))),
  ];
  const svg = { xmlns: 'http://www.w3.org/2000/svg', ...size, ...font, role: 'img', 'aria-labelledby': 'title desc' };
  return `${tag('svg', svg, `\n${content.join('\n')}\n`)}\n`;
}

/** The title, and a description that says in words what the picture shows. */
function heading(
  ring: HashRing,
  next: HashRing | undefined,
  nodes: Node[],
  ids: number,
  percent: (node: string) => string,
): { title: string; desc: string } {
  const ofIds = ids ? `, ${plural(ids, 'id')}` : '';
  const shape = (r: HashRing) => `${plural(r.nodes.length, 'node')} × ${plural(r.replicas, 'replica')}`;
  const each = nodes.filter((n) => ring.nodes.includes(n.node)).map(({ node, key: k }) => `${k} ${node} ${percent(node)}`).join(', ');
  const moving = next === undefined ? '' : ` A reshard moves it to ${shape(next)}.`;
  return {
    title: `${shape(ring)}${next === undefined ? '' : ` → ${shape(next)}`}${ofIds}`,
    desc: `A consistent-hash ring. ${READING} Each node's share of the ring: ${each}.${moving}`,
  };
}

// The arrowhead: a triangle drawn in a 10 × 10 box centred on the line's end, turned to follow the line.
const HEAD_BOX = { viewBox: '0 0 10 10', refX: 5, refY: 5, markerWidth: ARROW_HEAD, markerHeight: ARROW_HEAD };
const ARROW_MARKER = tag(
  'marker',
  { id: 'arrow', ...HEAD_BOX, orient: 'auto' },
  tag('path', { d: 'M0 0L10 5L0 10z', fill: INK }),
);

/** One legend row, from its top: the node's colour, then its key in bold, and the rest of its line. */
function legendRow({ node, key: k, colour, rest }: Node & { rest: string }, y: number): string[] {
  const swatch = { x: EDGE, y, width: SWATCH, height: SWATCH, fill: colour, stroke: INK, 'stroke-width': OUTLINE };
  const text = `${tag('tspan', { 'font-weight': 'bold' }, k)}${xml(rest)}`;
  return [
    tag('rect', { class: 'swatch', 'data-node': node, ...swatch }),
    tag('text', { x: LEGEND_TEXT_X, y: y + ROW_MIDDLE, ...CENTRED }, text),
  ];
}

/** Ids sit in a band inside the circle, spread by their hash so that close neighbours overlap less. */
function idRadius(id: string): number {
  return INNER - ID_BAND.inset - ID_BAND.depth * fraction(position(`${id}#r`));
}
