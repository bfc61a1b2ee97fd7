// page/live.js: the live page's script, in the browser. It asks this shard
// for the cluster's state (GET /cluster/live) every few hundred milliseconds,
// with the ETag of the last answer, so that nothing changed costs a 304; it
// shows the nodes and a reshard's progress, and redraws the ring when the map
// changes. The ring is drawn by the shard, with the code of `map --svg`
// (lab/ring-svg.ts), and where an id lives is ring.ts's answer, asked of the
// shard: the page holds no copy of either. Plain JavaScript, no build step.

const $ = (id) => document.getElementById(id);

let etag = null; // of the last state shown
let pollMs = 500; // until the shard says how often to ask
let state = null; // the last state shown
let drawn = null; // what the ring on the page shows: the epoch, and the id in the box
let asked = ''; // the id in the box
let drawing = 0; // the newest picture asked for: an older one that comes later is dropped
let placing = 0; // and the newest answer for the id box

/** Asks for the state, shows it if it changed, and asks again after pollMs, whatever happened. */
async function poll() {
  try {
    const res = await fetch('/cluster/live', { headers: etag === null ? {} : { 'If-None-Match': etag }, cache: 'no-store' });
    if (res.status === 200) {
      etag = res.headers.get('ETag');
      show(await res.json());
    } else if (res.status !== 304) {
      down(`this shard answered HTTP ${res.status}: ${(await res.json().catch(() => ({}))).error ?? ''}`);
    } else if (document.body.dataset.down) {
      show(state);
    }
  } catch {
    down('this shard does not answer: the page tries again, and shows the cluster as soon as it does');
  }
  setTimeout(poll, pollMs);
}

function down(why) {
  document.body.dataset.down = 'yes';
  $('status').className = 'down';
  $('status').textContent = why;
}

function show(s) {
  state = s;
  pollMs = s.pollMs;
  delete document.body.dataset.down;
  document.body.dataset.epoch = s.map === null ? '' : String(s.map.epoch);
  $('status').className = '';
  $('status').textContent = statusLine(s);
  showNodes(s);
  showReshard(s);
  const epoch = s.map === null ? null : s.map.epoch;
  if (drawn === null || drawn.epoch !== epoch) update();
}

function statusLine(s) {
  const here = `served by ${s.address}, a ${s.role}`;
  if (s.map === null) return `This shard holds no cluster map: it serves every id itself (${here}).`;
  const ring = (nodes, replicas) => `${nodes.length} node${nodes.length === 1 ? '' : 's'} × ${replicas}`;
  const moving = s.map.moving ? `, moving to ${ring(s.map.moving.nodes, s.map.moving.replicas)}` : '';
  return `Epoch ${s.map.epoch}: ${ring(s.map.nodes, s.map.replicas)}${moving}; ${here}.`;
}

/** An element with text and attributes; children may follow. */
function el(name, attributes = {}, ...children) {
  const e = document.createElement(name);
  for (const [k, v] of Object.entries(attributes)) if (v !== undefined) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}

function showNodes(s) {
  const rows = s.nodes.map((n) => {
    const name = el('td', { class: 'name' }, el('span', { class: 'swatch', style: `background:${n.colour}` }), el('b', {}, n.key), ` ${n.name}`);
    if (n.place !== 'serves') name.append(el('span', { class: 'quiet' }, n.place === 'joins' ? ' joins' : ' leaves'));
    const moved = n.address !== n.name;
    const address = el('td', { class: `address${moved ? ' moved-address' : ''}`, title: moved ? 'a failover gave this node a new address' : undefined }, n.address);
    const answers = n.answers === null ? el('td', { class: 'answers quiet' }, 'asking…') : el('td', { class: `answers ${n.answers ? 'yes' : 'no'}`, title: n.why }, n.answers ? 'yes' : `no: ${n.why}`);
    const role = el('td', { class: 'role' }, n.role ?? '—');
    return el('tr', { 'data-node': n.name }, name, address, role, answers, el('td', { class: 'count' }, records(n)));
  });
  for (const f of s.forgot ?? []) {
    rows.push(el('tr', { class: 'quiet', 'data-forgot': f.name }, el('td', {}, f.name), el('td', { colspan: '4' }, `forgotten at epoch ${f.epoch}: gone for good`)));
  }
  $('nodes').tBodies[0].replaceChildren(...rows);
}

function records(n) {
  if (n.live === undefined) return '';
  const extra = [n.moved ? `${n.moved} moved` : '', n.incoming ? `${n.incoming} incoming` : ''].filter(Boolean);
  return `${n.live} live${extra.length ? `, ${extra.join(', ')}` : ''}`;
}

function showReshard(s) {
  const p = s.progress;
  $('reshard').hidden = p === null;
  if (p === null) return;
  const by = s.map.moving.by;
  $('progress').max = Math.max(p.handsOff, 1);
  $('progress').value = p.moved;
  const share = p.handsOff === 0 ? 100 : Math.floor((100 * p.moved) / p.handsOff);
  const inFlight = p.incoming ? `; ${p.incoming} cop${p.incoming === 1 ? 'y' : 'ies'} on the way` : '';
  const silent = p.silent ? ` (${p.silent} node${p.silent === 1 ? '' : 's'} did not answer: their records are not counted)` : '';
  $('progress-text').textContent = `${p.moved} of ${p.handsOff} records moved (${share}%)${inFlight}${silent}. Run by ${by.host}, process ${by.pid}, since ${by.started}.`;
  $('progress-text').dataset.moved = String(p.moved);
  $('progress-text').dataset.total = String(p.handsOff);
}

/** The answer for the id in the box, then the ring with its walk, or without one for an id the shard refused. */
async function update() {
  const placed = await place();
  if (placed !== undefined) await drawRing(placed ? asked : '');
}

/** The ring of the map shown, with `id` walked to its owner. */
async function drawRing(id) {
  const mine = ++drawing;
  const epoch = state?.map ? state.map.epoch : null;
  if (epoch === null) {
    $('ring').replaceChildren();
    drawn = { epoch, id };
    return;
  }
  const res = await fetch(`/cluster/ring.svg${id === '' ? '' : `?id=${encodeURIComponent(id)}`}`, { cache: 'no-store' }).catch(() => null);
  if (mine !== drawing || res === null || !res.ok) return;
  const svg = await res.text();
  if (mine !== drawing) return;
  $('ring').innerHTML = svg;
  drawn = { epoch, id };
  $('ring').dataset.epoch = String(epoch);
  $('ring').dataset.id = id;
}

/** Where the id in the box lives: ring.ts's answer, from the shard. True when shown, false when refused, undefined when overtaken. */
async function place() {
  const mine = ++placing;
  const id = asked;
  const answer = $('answer');
  if (id === '') {
    answer.replaceChildren();
    delete answer.dataset.owner;
    return false;
  }
  const res = await fetch(`/cluster/place/${encodeURIComponent(id)}`, { cache: 'no-store' }).catch(() => null);
  const body = res === null ? { error: 'this shard does not answer' } : await res.json().catch(() => ({ error: `HTTP ${res.status}` }));
  if (mine !== placing) return undefined;
  if (res === null || !res.ok) {
    answer.textContent = body.error;
    delete answer.dataset.owner;
    return false;
  }
  const percent = (f) => `${(f * 100).toFixed(2)}%`;
  const owner = body.owner;
  const at = owner.address === owner.name ? '' : `, at ${owner.address} since a failover`;
  const moves = body.movesTo ? ` A reshard is moving it to ${body.movesTo.key} ${body.movesTo.name}.` : '';
  answer.replaceChildren(
    `Id ${JSON.stringify(id)} hashes to `, el('code', {}, body.hash.slice(0, 12) + '…'), ` (${percent(body.at)} of the way round). `,
    `Clockwise, the first node point is ${owner.key}'s, at ${percent(body.point.at)}, so its owner is `,
    el('b', { class: 'owner' }, `${owner.key} ${owner.name}`), `${at}.${moves}`,
  );
  answer.dataset.owner = owner.name;
  answer.dataset.id = id;
  answer.dataset.epoch = String(body.epoch);
  return true;
}

let typing;
$('id').addEventListener('input', (e) => {
  clearTimeout(typing);
  typing = setTimeout(() => {
    asked = e.target.value.trim();
    update();
  }, 120);
});
$('find').addEventListener('submit', (e) => e.preventDefault());

poll();
