// Building the DOM without markup: every piece of text (key names, model
// names, error messages) goes through textContent, never through an HTML
// parser, and no inline handler or style attribute is ever set. The page's
// Content-Security-Policy (with Trusted Types) would refuse those anyway; the
// checks here make a mistake fail loudly in development instead.

const SVG_NS = 'http://www.w3.org/2000/svg';

function apply(el, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'on') {
      for (const [ev, fn] of Object.entries(value)) el.addEventListener(ev, fn);
    } else if (name === 'text') {
      el.textContent = String(value);
    } else if (name === 'dataset') {
      for (const [k, v] of Object.entries(value)) el.dataset[k] = String(v);
    } else if (name === 'style' || name.startsWith('on') || /html/i.test(name)) {
      throw new Error(`dom: refusing to set "${name}"`);
    } else if (name === 'value' || name === 'checked' || name === 'selected' || name === 'disabled' ||
               name === 'hidden') {
      el[name] = value;
    } else {
      el.setAttribute(name, value === true ? '' : String(value));
    }
  }
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** An HTML element: h('button', {class: 'btn', on: {click}}, 'Label', child...). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  apply(el, attrs);
  append(el, children);
  return el;
}

/** An SVG element, the same way. */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  apply(el, attrs);
  append(el, children);
  return el;
}

/** Replaces el's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A table head: one <th scope="col"> per column; numeric ones (named in `numeric`) right-aligned. */
export function thead(cols, numeric = []) {
  return h('thead', {}, h('tr', {}, cols.map((c) => h('th', {scope: 'col', class: numeric.includes(c) ? 'num' : null, text: c}))));
}
