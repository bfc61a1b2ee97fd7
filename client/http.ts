// client/http.ts: one JSON request to one node, and nothing else.

export type Answer = { status: number; body: any; etag: string | undefined };

const TIMEOUT_MS = 10_000;

/**
 * One JSON request to one node ("host:port"). Resolves with any HTTP status;
 * rejects with a readable reason when the node cannot be reached at all.
 * Global fetch keeps connections alive between calls to the same node.
 */
export async function call(node: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Answer> {
  let res: Response;
  try {
    res = await fetch(`http://${node}${path}`, {
      method,
      headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
  } catch (err) {
    throw new Error(`cannot reach ${node}: ${reason(err)}`);
  }
  const text = await res.text();
  try {
    return { status: res.status, body: text === '' ? undefined : JSON.parse(text), etag: res.headers.get('etag') ?? undefined };
  } catch {
    throw new Error(`${node} answered HTTP ${res.status} with a body that is not JSON`);
  }
}

function reason(err: unknown): string {
  const e = err as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  if (e.name === 'TimeoutError') return `no answer within ${TIMEOUT_MS / 1000} s`;
  return e.cause?.code ?? e.cause?.message ?? e.message ?? String(err);
}

/** The error message a node sent, or its status. */
export function problem(answer: Answer): string {
  return `HTTP ${answer.status}${typeof answer.body?.error === 'string' ? `: ${answer.body.error}` : ''}`;
}
