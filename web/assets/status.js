// status.js: the status page, from Stats: counts, model identity, index and snapshot state,
// the duplicate policy and the recent failed calls; refreshed every 10 seconds.
import { call, num } from './api.js';
import { el, say, tokenBar } from './ui.js';

const $ = (id) => document.getElementById(id);
tokenBar();

function rows(id, pairs) {
  $(id).replaceChildren(...pairs.map(([k, v]) => el('tr', {}, el('th', { scope: 'row' }, k), el('td', { class: 'num' }, v))));
}

function bytes(n) {
  if (n < 1024) return n + ' B';
  if (n < 1 << 20) return (n / 1024).toFixed(1) + ' KiB';
  return (n / (1 << 20)).toFixed(1) + ' MiB';
}

function age(d) {
  // protojson writes a Duration as "12.5s".
  const s = parseFloat(d);
  if (!isFinite(s)) return '';
  if (s < 120) return s.toFixed(0) + ' s';
  if (s < 7200) return (s / 60).toFixed(0) + ' min';
  return (s / 3600).toFixed(1) + ' h';
}

// policyText describes the duplicate policy; the crop rule is off when crop_hamming is 0.
function policyText(p) {
  let text = `look-alike ≥ ${p.look_alike.toFixed(3)}, copy ≥ ${p.copy_cosine.toFixed(3)} and ≤ ${p.copy_hamming} bits`;
  if (p.crop_hamming > 0) text += `, or a crop ≤ ${p.crop_hamming} bits from a window at ≥ ${p.crop_cosine.toFixed(3)}, colours correlating ≥ ${p.crop_correlation.toFixed(3)}`;
  return `${text} (${p.source})`;
}

async function refresh() {
  let st;
  try {
    st = await call('GET', '/v1/stats');
  } catch (e) {
    say($('status'), 'Could not read the status: ' + e.message, true);
    return;
  }
  say($('status'), 'Updated ' + new Date().toLocaleTimeString() + '.');
  rows('counts', [
    ['Products', num(st.count)],
    ['Photos', num(st.photos)],
    ['Kept photos', `${num(st.kept_photos)} (${bytes(num(st.kept_bytes))})`],
    ['Duplicate decisions', num(st.decisions)],
    ['Duplicate policy', st.duplicate_policy ? policyText(st.duplicate_policy) : ''],
  ]);
  const ix = st.index || {};
  rows('model', [
    ['Backend', st.backend || 'embedded'],
    ['Model identity', st.model_identity],
    ['Dimension', st.dim],
    ['Metric', ix.metric],
    // After a start the graph may still be catching up with the store: those photos are
    // served all the same, scored exactly beside the graph.
    ['Graph size', num(ix.size) + ' vectors' + (num(ix.catching_up) > 0 ? ` (${num(ix.catching_up)} photos still catching up; searches score them exactly)` : '')],
    ['M, efConstruction, efSearch', `${ix.m}, ${ix.ef_construction}, ${ix.ef_search}`],
  ]);
  const behind = num(st.store_seq) - num(st.snapshot_seq);
  rows('snapshot', (st.backend || 'embedded') !== 'embedded' ? [
    ['Store', `the ${st.backend} backend keeps the catalogue; no store file or graph snapshot on this server`],
  ] : [
    ['Store sequence', num(st.store_seq)],
    ['Snapshot covers', num(st.snapshot_seq) ? `sequence ${num(st.snapshot_seq)}${behind > 0 ? ` (${behind} writes since)` : ' (up to date)'}` : 'no snapshot yet'],
    ['Snapshot saved', st.snapshot_time ? `${new Date(st.snapshot_time).toLocaleString()} (${age(st.snapshot_age)} ago)` : '—'],
  ]);
  const cats = Object.entries(st.count_by_category || {}).sort(([a], [b]) => a.localeCompare(b));
  $('categories').replaceChildren(...cats.map(([c, n]) => el('tr', {}, el('td', {}, c || '(none)'), el('td', { class: 'num' }, num(n)))));
  const errs = st.recent_errors || [];
  $('errors').replaceChildren(...(errs.length ? errs.map((e) => el('tr', {},
    el('td', {}, new Date(e.at).toLocaleString()), el('td', {}, e.method), el('td', {}, e.code), el('td', {}, e.message)))
    : [el('tr', {}, el('td', { colspan: 4, class: 'muted' }, 'None since the server started.'))]));
}

async function metricsLink() {
  const a = $('metrics');
  try {
    const cfg = await (await fetch('/ui/config.json')).json();
    if (cfg.metrics_port) {
      a.href = `http://${cfg.metrics_host || location.hostname}:${cfg.metrics_port}/metrics`;
      return;
    }
  } catch {
    // fall through
  }
  a.replaceWith(el('span', { class: 'muted' }, 'metrics off (serve --metrics ADDR)'));
}

metricsLink();
refresh();
setInterval(refresh, 10000);
