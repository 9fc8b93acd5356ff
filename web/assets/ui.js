// ui.js: small DOM helpers the pages share. Text always goes in as text (never as HTML), so
// product titles and ids cannot inject markup.
import { onUnauthenticated, setToken, showPhoto, token } from './api.js';

/** el('a', {href: '/x', class: 'card'}, child, 'text', ...) */
export function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'class') e.className = v;
    else if (v === true) e.setAttribute(k, '');
    else e.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

/** The name a product is shown by: its title, else its id. */
export function nameOf(product) {
  return product.title || product.id;
}

/**
 * An image of a product's photo (photoId, or its first photo), alt text from its title; a
 * placeholder when the server keeps no copy of that photo.
 */
export function productPhoto(product, photoId, className = 'thumb') {
  const photos = product.photos || [];
  const photo = photos.find((p) => p.id === photoId) || photos[0];
  if (!photo || !photo.kept) {
    return el('div', { class: className + ' nophoto', role: 'img', 'aria-label': nameOf(product) }, 'no photo kept');
  }
  const img = el('img', { class: className, alt: nameOf(product), loading: 'lazy', decoding: 'async' });
  showPhoto(img, product.id, photo.id).catch(() => {
    img.alt = nameOf(product) + ' (photo unavailable)';
  });
  return img;
}

/** A product card linking to its page; extra nodes go below the link. */
export function productCard(product, photoId, ...extra) {
  return el('li', { class: 'card', 'data-id': product.id },
    el('a', { href: '/product?id=' + encodeURIComponent(product.id) },
      productPhoto(product, photoId),
      el('span', { class: 'title' }, nameOf(product))),
    el('span', { class: 'meta' }, product.category || ''),
    ...extra);
}

/** A score as people read it: the cosine similarity to three decimals. */
export function score(s) {
  return (s || 0).toFixed(3);
}

/** Shows msg in a status element, as an error when isError. */
export function say(node, msg, isError = false) {
  node.textContent = msg;
  node.classList.toggle('error', isError);
}

/** fn, run once calls stop coming for ms. */
export function debounce(fn, ms) {
  let t;
  return (...args) => {
    clearTimeout(t);
    t = setTimeout(() => fn(...args), ms);
  };
}

/** The CSS class and words of a duplicate tier. */
export function tierOf(tier) {
  switch (tier) {
    case 'TIER_EXACT': return { cls: 'exact', words: 'exact' };
    case 'TIER_COPY': return { cls: 'copy', words: 'copy' };
    case 'TIER_LOOK_ALIKE': return { cls: 'look-alike', words: 'look-alike' };
    default: return { cls: '', words: 'none' };
  }
}

/**
 * The token bar: hidden until the server asks for a bearer token (HTTP 401); then a form that
 * keeps the token for this tab and reloads.
 */
export function tokenBar() {
  const input = el('input', { id: 'token', type: 'password', autocomplete: 'off', required: true });
  const why = el('span', { class: 'muted' });
  const bar = el('div', { class: 'token', hidden: true },
    el('form', {
      onsubmit: (ev) => {
        ev.preventDefault();
        setToken(input.value.trim());
        location.reload();
      },
    },
    el('label', { for: 'token' }, 'This server needs a token:'), input,
    el('button', { type: 'submit' }, 'Use token'),
    token() ? el('button', { type: 'button', class: 'secondary', onclick: () => { setToken(''); location.reload(); } }, 'Forget token') : null,
    why));
  document.querySelector('header.top').after(bar);
  onUnauthenticated((message) => {
    why.textContent = token() ? '(the one given was refused: ' + message + ')' : '';
    bar.hidden = false;
  });
}
