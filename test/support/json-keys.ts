/**
 * The keys that appear more than once in one object of a JSON text (JSON.parse keeps the last
 * silently). A small recursive-descent reader of valid JSON; it throws on anything else.
 */
export function duplicateKeys(text: string): string[] {
  let at = 0;
  const found: string[] = [];
  const space = () => {
    while (at < text.length && ' \t\n\r'.includes(text[at] ?? '')) at++;
  };
  const string = (): string => {
    const start = at;
    at++;
    while (text[at] !== '"') {
      if (at >= text.length) throw new SyntaxError('unterminated string');
      at += text[at] === '\\' ? 2 : 1;
    }
    at++;
    return JSON.parse(text.slice(start, at)) as string;
  };
  const value = (): void => {
    space();
    const char = text[at];
    if (char === '{') {
      at++;
      const keys = new Set<string>();
      space();
      if (text[at] === '}') {
        at++;
        return;
      }
      for (;;) {
        space();
        const key = string();
        if (keys.has(key)) found.push(key);
        keys.add(key);
        space();
        if (text[at++] !== ':') throw new SyntaxError(`expected : at ${at - 1}`);
        value();
        space();
        const next = text[at++];
        if (next === '}') return;
        if (next !== ',') throw new SyntaxError(`expected , or } at ${at - 1}`);
      }
    }
    if (char === '[') {
      at++;
      space();
      if (text[at] === ']') {
        at++;
        return;
      }
      for (;;) {
        value();
        space();
        const next = text[at++];
        if (next === ']') return;
        if (next !== ',') throw new SyntaxError(`expected , or ] at ${at - 1}`);
      }
    }
    if (char === '"') {
      string();
      return;
    }
    const literal = /^(-?\d+(\.\d+)?([eE][+-]?\d+)?|true|false|null)/.exec(text.slice(at));
    if (!literal) throw new SyntaxError(`unexpected ${char ?? 'end'} at ${at}`);
    at += literal[0].length;
  };
  value();
  space();
  if (at !== text.length) throw new SyntaxError(`trailing text at ${at}`);
  return found;
}
