/**
 * The only way this UI creates DOM: elements from tag names, text through text nodes and
 * textContent. No HTML string is ever parsed, so service, who and reason (text anyone can
 * send to the API) can never become markup.
 */

export type Child = Node | string | number | null | undefined | false;

export interface Props {
  class?: string;
  /** Attributes set with setAttribute (values are text, never parsed). */
  attrs?: Record<string, string>;
  /** Event listeners. */
  on?: { [K in keyof HTMLElementEventMap]?: (event: HTMLElementEventMap[K]) => void };
}

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Props | null = null,
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  if (props?.class) element.className = props.class;
  if (props?.attrs)
    for (const [name, value] of Object.entries(props.attrs)) element.setAttribute(name, value);
  if (props?.on) {
    for (const [type, listener] of Object.entries(props.on)) {
      element.addEventListener(type, listener as EventListener);
    }
  }
  append(element, children);
  return element;
}

export function append(parent: Node, children: readonly Child[]): void {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    parent.appendChild(typeof child === 'object' ? child : document.createTextNode(String(child)));
  }
}

/** Sets an element's text only when it changed (cheap re-renders of recycled rows). */
export function setText(element: Node, text: string): void {
  if (element.textContent !== text) element.textContent = text;
}

/** The element with this id; throws when index.html lacks it. */
export function byId<T extends HTMLElement = HTMLElement>(id: string): T {
  const element = document.getElementById(id);
  if (!element) throw new Error(`missing #${id} in index.html`);
  return element as T;
}
