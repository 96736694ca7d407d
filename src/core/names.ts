import { invalidArgument } from './errors.js';
import { CONTROL_CHARACTERS, INVISIBLE_CHARACTERS, MAX_NAME_LENGTH, normalizeName } from './lock.js';

/** The rules of names and free text, for every name the core keeps (locks, resources, webhooks). */

/**
 * The rules for `service` and `who`: present, not blank, short, printable, nothing invisible.
 * Returns the name as it is kept and compared (NFC): every operation uses that, never the raw
 * value, so that one name typed two ways is one lock.
 */
export function validateName(field: string, value: string): string {
  if (value.trim() === '') throw invalidArgument(field, `${field} must be a non-empty string`);
  // As sent (what the REST schema checks too), then in NFC, which may be longer (U+FB2C is
  // three code points in NFC).
  validateText(field, value, MAX_NAME_LENGTH);
  const name = normalizeName(value);
  validateText(field, name, MAX_NAME_LENGTH);
  const invisible = INVISIBLE_CHARACTERS.exec(name)?.[0];
  if (invisible !== undefined) {
    const code = (invisible.codePointAt(0) ?? 0).toString(16).toUpperCase().padStart(4, '0');
    throw invalidArgument(
      field,
      `${field} must not contain invisible or bidirectional formatting characters (U+${code})`,
    );
  }
  return name;
}

/** Free text: at most `max` characters, printable. */
export function validateText(field: string, value: string, max: number): void {
  // Code points, not UTF-16 units, so that the limit means the same as in JSON Schema.
  if ([...value].length > max) {
    throw invalidArgument(field, `${field} must be at most ${max} characters`);
  }
  if (CONTROL_CHARACTERS.test(value)) {
    throw invalidArgument(field, `${field} must not contain control characters`);
  }
  // A lone surrogate (possible in JSON's \uD800 escapes) is not text: stores would write it
  // as invalid UTF-8 and read back something else, so two names could look alike.
  if (LONE_SURROGATE.test(value)) {
    throw invalidArgument(field, `${field} must be well-formed Unicode (no lone surrogates)`);
  }
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
