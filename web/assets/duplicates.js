// duplicates.js: the duplicate review. Clusters stream from FindDuplicates at the chosen
// threshold; each shows its products' photos side by side, the pairs with their score, tier
// and signals, and buttons that record a decision (ResolveDuplicates), which every later scan
// honours: "not duplicates" keeps the pair apart, "same product" marks it resolved.
import { call, num, stream } from './api.js';
import { debounce, el, nameOf, productPhoto, say, score, tierOf, tokenBar } from './ui.js';

const $ = (id) => document.getElementById(id);
const SHOW = 20; // clusters drawn at a time
const products = new Map(); // id -> Promise of the product
const state = { clusters: [], shown: 0, scan: null };

tokenBar();
$('reviewer').value = localStorage.getItem('lookalike.reviewer') || '';
$('reviewer').addEventListener('change', () => localStorage.setItem('lookalike.reviewer', $('reviewer').value.trim()));

function product(id) {
  if (!products.has(id)) {
    products.set(id, call('GET', '/v1/products/' + encodeURIComponent(id)).then((r) => r.product, () => ({ id, photos: [] })));
  }
  return products.get(id);
}

async function scan() {
  if (state.scan) state.scan.abort();
  const ctl = new AbortController();
  state.scan = ctl;
  state.clusters = [];
  state.shown = 0;
  $('clusters').replaceChildren();
  $('more').hidden = true;
  say($('status'), 'Scanning…');
  const params = { threshold: $('threshold').value, min_tier: $('tier').value };
  try {
    await stream('/v1/duplicates', params, (c) => {
      state.clusters.push(c);
      if (state.shown < SHOW) drawNext(1);
    }, ctl.signal);
  } catch (e) {
    if (ctl.signal.aborted) return;
    say($('status'), 'The scan failed: ' + e.message, true);
    return;
  }
  const n = state.clusters.length;
  say($('status'), n ? `${n} cluster${n === 1 ? '' : 's'} at threshold ${Number(params.threshold).toFixed(3)}.` : 'No duplicates at this threshold.');
  $('more').hidden = state.shown >= n;
}

function drawNext(count) {
  const end = Math.min(state.clusters.length, state.shown + count);
  for (; state.shown < end; state.shown++) $('clusters').append(clusterView(state.clusters[state.shown], state.shown + 1));
  $('more').hidden = state.shown >= state.clusters.length;
}

function photoOf(cluster, id) {
  for (const e of cluster.edges) {
    if (e.a === id) return e.photo_a;
    if (e.b === id) return e.photo_b;
  }
  return '';
}

function decide(cluster, node, verdict, keep) {
  const buttons = node.querySelectorAll('.actions button');
  buttons.forEach((b) => { b.disabled = true; });
  const note = node.querySelector('.note');
  const by = $('reviewer').value.trim();
  call('POST', '/v1/decisions', { body: { ids: cluster.ids, verdict, keep: keep || '', by } })
    .then(async (resp) => {
      const what = verdict === 'different' ? 'not duplicates' : `the same product, keep ${nameOf(await product(keep))}`;
      say(note, `Recorded (${resp.decisions.length} pair${resp.decisions.length === 1 ? '' : 's'}): ${what}. Later scans honour it.`);
      node.classList.add('decided');
      decisions();
    })
    .catch((e) => {
      say(note, 'Could not record the decision: ' + e.message, true);
      buttons.forEach((b) => { b.disabled = false; });
    });
}

function clusterView(cluster, number) {
  const tier = tierOf(cluster.tier);
  const scores = cluster.edges.map((e) => e.score);
  const node = el('article', { class: 'cluster', 'aria-labelledby': `cl-${number}`, 'data-ids': cluster.ids.join(' ') });
  const members = el('ul', { class: 'members' });
  const rows = el('tbody');
  node.append(
    el('header', {},
      el('h2', { id: `cl-${number}` }, `Cluster ${number}: ${cluster.ids.length} products`),
      el('span', { class: 'tier ' + tier.cls }, tier.words),
      cluster.resolved ? el('span', { class: 'tier resolved' }, 'resolved') : null,
      el('span', { class: 'muted' }, `scores ${score(Math.min(...scores))}–${score(Math.max(...scores))}`)),
    members,
    el('div', { class: 'actions' },
      el('button', {
        type: 'button', class: 'danger not-duplicates', onclick: () => decide(cluster, node, 'different'),
      }, 'Not duplicates')),
    el('p', { class: 'note status-line', role: 'status' }),
    el('details', { class: 'edges' }, el('summary', {}, `${cluster.edges.length} pair${cluster.edges.length === 1 ? '' : 's'}: scores, tiers and signals`),
      el('div', { class: 'scroll' }, el('table', {},
        el('thead', {}, el('tr', {}, ['Pair', 'Score', 'Tier', 'Signals', 'Decision'].map((h) => el('th', { scope: 'col' }, h)))),
        rows))));
  for (const id of cluster.ids) {
    const li = el('li', { class: 'member' }, el('span', { class: 'muted' }, id));
    members.append(li);
    product(id).then((p) => {
      li.replaceChildren(
        el('a', { href: '/product?id=' + encodeURIComponent(id) }, productPhoto(p, photoOf(cluster, id))),
        el('span', { class: 'title' }, nameOf(p)),
        el('span', { class: 'meta' }, [p.category, id].filter(Boolean).join(' · ')),
        el('span', { class: 'actions' }, el('button', {
          type: 'button', class: 'secondary keep', 'aria-label': `Same product, keep ${nameOf(p)}`,
          onclick: () => decide(cluster, node, 'same', id),
        }, 'Same product, keep this one')));
    });
  }
  for (const e of cluster.edges) {
    const t = tierOf(e.tier);
    const s = e.signals || {};
    // crop_hamming is -1 when it was not needed (or there was no kept photo to crop).
    const crop = s.crop_hamming >= 0 ? `crop ${s.crop_hamming} bits from a window${s.crop_correlation ? ', colours correlate ' + s.crop_correlation.toFixed(4) : ''}` : '';
    const signals = [`cosine ${score(s.cosine)}`, s.hamming >= 0 ? `hash ${s.hamming} bits apart` : 'no hash', crop, s.same_bytes ? 'same bytes' : ''].filter(Boolean).join(', ');
    rows.append(el('tr', {},
      el('td', {}, `${e.a} ~ ${e.b}`),
      el('td', { class: 'num' }, score(e.score)),
      el('td', {}, el('span', { class: 'tier ' + t.cls }, t.words)),
      el('td', {}, signals),
      el('td', {}, e.decision ? `${e.decision.verdict}${e.decision.by ? ' (' + e.decision.by + ')' : ''}` : '')));
  }
  return node;
}

async function decisions() {
  try {
    const resp = await call('GET', '/v1/decisions');
    const list = resp.decisions || [];
    say($('dec-status'), list.length ? '' : 'None yet.');
    $('decisions').tBodies[0].replaceChildren(...list.map((d) => el('tr', {},
      el('td', {}, `${d.a} ~ ${d.b}`),
      el('td', {}, d.verdict),
      el('td', {}, d.keep),
      el('td', {}, d.by),
      el('td', {}, d.at ? new Date(d.at).toLocaleString() : ''),
      el('td', {}, el('button', {
        type: 'button', class: 'secondary', 'aria-label': `Forget the decision on ${d.a} and ${d.b}`,
        onclick: async () => {
          try {
            await call('DELETE', `/v1/decisions/${encodeURIComponent(d.a)}/${encodeURIComponent(d.b)}`);
            decisions();
          } catch (e) {
            say($('dec-status'), 'Could not forget it: ' + e.message, true);
          }
        },
      }, 'Forget')))));
  } catch (e) {
    say($('dec-status'), 'Could not list the decisions: ' + e.message, true);
  }
}

async function start() {
  try {
    const st = await call('GET', '/v1/stats');
    const t = st.duplicate_policy && st.duplicate_policy.look_alike;
    if (t) $('threshold').value = String(t);
    say($('status'), `${num(st.count)} products; policy: ${st.duplicate_policy ? st.duplicate_policy.source : 'default'}.`);
  } catch {
    // the scan reports what is wrong
  }
  $('threshold-out').value = Number($('threshold').value).toFixed(3);
  scan();
  decisions();
}

const rescan = debounce(scan, 300);
$('threshold').addEventListener('input', () => { $('threshold-out').value = Number($('threshold').value).toFixed(3); rescan(); });
$('tier').addEventListener('change', scan);
$('rescan').addEventListener('click', scan);
$('more').addEventListener('click', () => drawNext(SHOW));
start();
