// api/words.ts: English for the client's tables, pictures and messages.

/** "1 node", "2 nodes": a count with its noun, plural unless the count is 1. */
export function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}
