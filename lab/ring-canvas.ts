// lab/ring-canvas.ts: where the ring's picture puts things (lab/ring-svg.ts),
// and how it writes them: the layout in SVG units, a canvas that keeps labels
// off each other, and the few helpers that write SVG text safely.

// The layout, in SVG units. The page, top down: the title, the ring, the
// legend (a row per node), the notes (a row each).
export const EDGE = 20; // the page's left and right margin
export const TITLE_Y = 30; // the title's baseline
const TOP = 60; // room for the title, above the ring's margin
export const RADIUS = 260; // the ring's, to the middle of its band
export const BAND = 24; // the width of the coloured ring
export const OUTER = RADIUS + BAND / 2; // the band's outer edge
export const INNER = RADIUS - BAND / 2; // and its inner edge
export const MARGIN = 64; // room outside the ring for point labels and ticks
export const FONT = 13;
const EM_WIDTH = 0.7; // a character's width, in ems, generously: see width()
const LINE_HEIGHT = 1.2; // a line of text, in ems
const NUDGE = 14; // how far a label may move off its mark to find room
export const CENTRED = { 'dominant-baseline': 'middle' }; // text set on its y, not above it

export type Box = { x: number; y: number; w: number; h: number };

/** Where things go: the ring's centre, and the labels placed so far. */
export class Canvas {
  readonly cx = EDGE + MARGIN + RADIUS;
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
      const box = { x: x - w / 2, y: y - size * (LINE_HEIGHT / 2), w, h: size * LINE_HEIGHT };
      if (this.#placed.some((b) => overlap(b, box))) continue;
      this.#placed.push(box);
      const fontSize = size === FONT ? undefined : size;
      return tag('text', { x, y, 'text-anchor': 'middle', ...CENTRED, 'font-size': fontSize }, xml(text));
    }
    return undefined;
  }

  /** Spots around fraction f at radius r: nearer the centre or further out, and a little to either side. */
  around(f: number, r: number): Array<[number, number]> {
    const turn = NUDGE / (2 * Math.PI * r);
    const moves = [[0, -NUDGE], [0, NUDGE], [-turn, 0], [turn, 0], [-turn, -NUDGE], [turn, -NUDGE]];
    return moves.map(([df, dr]) => this.xy(f + df!, r + dr!));
  }

  /** A path along the circle of radius r, clockwise from fraction `from` to fraction `to`. */
  arc(from: number, to: number, r: number): string {
    const large = (to - from + 1) % 1 > 0.5 ? 1 : 0;
    const [x0, y0] = this.xy(from, r);
    const [x1, y1] = this.xy(to, r);
    return `M${x0} ${y0}A${r} ${r} 0 ${large} 1 ${x1} ${y1}`;
  }
}

/** A generous estimate of a text's width: the test in a real browser holds us to it. */
export function width(text: string, size: number): number {
  return [...text].length * size * EM_WIDTH;
}

function overlap(a: Box, b: Box): boolean {
  return a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
}

/**
 * An element: attributes in the order given, undefined ones left out, every
 * value escaped; the content is markup already.
 */
export function tag(name: string, attributes: Record<string, string | number | undefined>, content?: string): string {
  const attrs = Object.entries(attributes).flatMap(([a, v]) => (v === undefined ? [] : [` ${a}="${xml(String(v))}"`]));
  return content === undefined ? `<${name}${attrs.join('')}/>` : `<${name}${attrs.join('')}>${content}</${name}>`;
}

export function round(n: number): number {
  return Math.round(n * 10) / 10;
}

export function xml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
