// product.js: one product (Get) with its photos, and a "similar products" strip (SearchById:
// every photo of the product searches; the product itself is never among the results).
import { call } from './api.js';
import { debounce, el, nameOf, productCard, productPhoto, say, score, tokenBar } from './ui.js';

const $ = (id) => document.getElementById(id);
const id = new URLSearchParams(location.search).get('id') || '';
const state = { notLike: [], names: {} };

tokenBar();

function showPhoto(product, photo) {
  $('main-photo').replaceChildren(productPhoto(product, photo.id, 'main'));
  for (const b of $('thumbs').querySelectorAll('button')) b.setAttribute('aria-pressed', String(b.dataset.photo === photo.id));
}

async function load() {
  if (!id) {
    say($('status'), 'No product given: open one from the catalogue.', true);
    return;
  }
  let product;
  try {
    product = (await call('GET', '/v1/products/' + encodeURIComponent(id))).product;
  } catch (e) {
    say($('status'), 'Could not load the product: ' + e.message, true);
    return;
  }
  document.title = nameOf(product) + ' · Lookalike storefront';
  $('title').textContent = nameOf(product);
  $('meta').textContent = [product.category, 'id ' + product.id, (product.photos || []).length + ' photos'].filter(Boolean).join(' · ');
  const photos = product.photos || [];
  $('thumbs').replaceChildren(...photos.map((ph, i) => el('li', {},
    el('button', {
      type: 'button', 'data-photo': ph.id, 'aria-pressed': 'false',
      'aria-label': `Photo ${i + 1} of ${photos.length}`, onclick: () => showPhoto(product, ph),
    }, productPhoto(product, ph.id, '')))));
  if (photos.length) showPhoto(product, photos[0]);
  const rows = Object.entries(product.attributes || {}).sort(([a], [b]) => a.localeCompare(b));
  $('attrs').tBodies[0].replaceChildren(...rows.map(([k, v]) => el('tr', {}, el('th', { scope: 'row' }, k), el('td', {}, v))));
  $('product').hidden = false;
  $('similar-section').hidden = false;
  similar();
}

async function similar() {
  say($('sim-status'), 'Looking for similar products…');
  try {
    const resp = await call('GET', `/v1/products/${encodeURIComponent(id)}/similar`, {
      params: {
        k: 8, diversity: Number($('div').value) > 0 ? $('div').value : '',
        group_by: $('group').value.trim(), not_like: state.notLike,
      },
    });
    const results = resp.results || [];
    say($('sim-status'), results.length ? '' : 'Nothing similar.');
    $('similar').replaceChildren(...results.map((r) => {
      state.names[r.product.id] = nameOf(r.product);
      return productCard(r.product, r.photo_id,
        el('span', { class: 'score' }, 'score ' + score(r.score)),
        el('button', {
          type: 'button', class: 'secondary not-this', 'aria-label': 'Not this: ' + nameOf(r.product),
          onclick: () => { state.notLike.push(r.product.id); rejected(); similar(); },
        }, 'Not this'));
    }));
  } catch (e) {
    say($('sim-status'), 'Could not find similar products: ' + e.message, true);
  }
}

function rejected() {
  $('rejected').replaceChildren(...state.notLike.map((x) => el('span', { class: 'chip' },
    'not ' + (state.names[x] || x),
    el('button', {
      type: 'button', class: 'secondary', 'aria-label': 'Undo not this: ' + (state.names[x] || x),
      onclick: () => { state.notLike = state.notLike.filter((y) => y !== x); rejected(); similar(); },
    }, 'undo'))));
}

const again = debounce(similar, 250);
$('div').addEventListener('input', () => { $('div-out').value = $('div').value; again(); });
$('group').addEventListener('change', again);
load();
