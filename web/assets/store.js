// store.js: the storefront demo. A paged grid of the catalogue (ListProducts), and a search
// by photo (SearchByImage, the photo sent as multipart/form-data) with the API's filters and
// ranking options; "not this" adds a product to not_like and searches again.
import { call, num } from './api.js';
import { debounce, el, nameOf, productCard, say, score, tokenBar } from './ui.js';

const PAGE_SIZE = 24;
const $ = (id) => document.getElementById(id);

tokenBar();

// ---- The catalogue grid -------------------------------------------------------------
const grid = { tokens: [''], at: 0 }; // page tokens seen, and which page is shown

async function showPage() {
  const category = $('c-category').value;
  say($('cat-status'), 'Loading…');
  try {
    const page = await call('GET', '/v1/products', {
      params: { page_size: PAGE_SIZE, page_token: grid.tokens[grid.at], 'filter.categories': category },
    });
    const list = $('grid');
    list.replaceChildren(...page.products.map((p) => productCard(p)));
    const total = num(page.total_size);
    const first = grid.at * PAGE_SIZE + 1;
    say($('cat-status'), total === 0 ? 'No products yet.' : '');
    $('page-info').textContent = total ? `${first}–${first + page.products.length - 1} of ${total}` : '';
    grid.tokens[grid.at + 1] = page.next_page_token;
    $('prev').disabled = grid.at === 0;
    $('next').disabled = !page.next_page_token;
  } catch (e) {
    say($('cat-status'), 'Could not load the catalogue: ' + e.message, true);
  }
}

$('prev').addEventListener('click', () => { grid.at = Math.max(0, grid.at - 1); showPage(); });
$('next').addEventListener('click', () => { grid.at++; showPage(); });
$('c-category').addEventListener('change', () => { grid.tokens = ['']; grid.at = 0; showPage(); });

async function loadCategories() {
  try {
    const st = await call('GET', '/v1/stats');
    const names = Object.keys(st.count_by_category || {}).filter((c) => c !== '').sort();
    for (const sel of [$('c-category'), $('s-category')]) {
      sel.append(...names.map((c) => el('option', { value: c }, `${c} (${num(st.count_by_category[c])})`)));
    }
  } catch {
    // the grid says what went wrong
  }
}

// ---- Search by photo ----------------------------------------------------------------
const search = { image: null, notLike: [], names: {} };

function parseAttrs(text) {
  const out = {};
  for (const part of text.split(',')) {
    const i = part.indexOf('=');
    if (i > 0) out[part.slice(0, i).trim()] = part.slice(i + 1).trim();
  }
  return out;
}

async function runSearch() {
  if (!search.image) return;
  const form = new FormData();
  form.append('image', search.image, 'photo');
  form.append('k', String(Math.min(100, Math.max(1, Number($('s-k').value) || 12))));
  if ($('s-category').value) form.append('filter.categories', $('s-category').value);
  for (const [k, v] of Object.entries(parseAttrs($('s-attrs').value))) form.append(`filter.attributes[${k}]`, v);
  if ($('s-group').value.trim()) form.append('group_by', $('s-group').value.trim());
  if (Number($('s-div').value) > 0) form.append('diversity', $('s-div').value);
  for (const id of search.notLike) form.append('not_like', id);
  say($('search-status'), 'Searching…');
  try {
    const resp = await call('POST', '/v1/search/image', { form });
    showResults(resp.results || []);
  } catch (e) {
    say($('search-status'), 'Search failed: ' + e.message, true);
  }
}

function showResults(results) {
  $('results-wrap').hidden = false;
  say($('search-status'), results.length ? `${results.length} matching products.` : 'Nothing matches these filters.');
  $('results').replaceChildren(...results.map((r) => {
    search.names[r.product.id] = nameOf(r.product);
    return productCard(r.product, r.photo_id,
      el('span', { class: 'score', title: 'cosine similarity of the best-matching photo' }, 'score ' + score(r.score)),
      el('button', {
        type: 'button', class: 'secondary not-this', 'aria-label': 'Not this: ' + nameOf(r.product),
        onclick: () => { search.notLike.push(r.product.id); showRejected(); runSearch(); },
      }, 'Not this'));
  }));
}

function showRejected() {
  $('rejected').replaceChildren(...search.notLike.map((id) => el('span', { class: 'chip' },
    'not ' + (search.names[id] || id),
    el('button', {
      type: 'button', class: 'secondary', 'aria-label': 'Undo not this: ' + (search.names[id] || id),
      onclick: () => { search.notLike = search.notLike.filter((x) => x !== id); showRejected(); runSearch(); },
    }, 'undo'))));
}

function searchWith(blob) {
  if (!blob.type.startsWith('image/')) {
    say($('search-status'), 'That is not a photo (' + (blob.type || 'unknown type') + ').', true);
    return;
  }
  search.image = blob;
  search.notLike = [];
  showRejected();
  const img = $('query-img');
  if (img.src.startsWith('blob:')) URL.revokeObjectURL(img.src);
  img.src = URL.createObjectURL(blob);
  runSearch();
}

// The page fetches a pasted URL itself (the server never fetches URLs for a browser); a
// site that does not allow it (no CORS) is reported, with what to do instead.
async function searchURL(url) {
  say($('search-status'), 'Fetching the photo…');
  let blob;
  try {
    const resp = await fetch(url, { mode: 'cors', credentials: 'omit' });
    if (!resp.ok) throw new Error('HTTP ' + resp.status);
    blob = await resp.blob();
  } catch (e) {
    say($('search-status'), `Could not read that photo (${e.message}): its site may not let other pages read it. Save it and drop the file here instead.`, true);
    return;
  }
  searchWith(blob);
}

$('file').addEventListener('change', (ev) => { if (ev.target.files[0]) searchWith(ev.target.files[0]); });
$('url-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const url = $('url').value.trim();
  if (url) searchURL(url);
});
const drop = $('drop');
drop.addEventListener('dragover', (ev) => { ev.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (ev) => {
  ev.preventDefault();
  drop.classList.remove('over');
  const file = ev.dataTransfer.files[0];
  if (file) { searchWith(file); return; }
  const url = (ev.dataTransfer.getData('text/uri-list') || ev.dataTransfer.getData('text/plain')).split('\n')[0].trim();
  if (url) searchURL(url);
});
const again = debounce(runSearch, 250);
for (const id of ['s-category', 's-attrs', 's-group', 's-div', 's-k']) $(id).addEventListener('change', again);
$('s-div').addEventListener('input', () => { $('s-div-out').value = $('s-div').value; });

loadCategories();
showPage();
