// The errors a pipeline definition raises for a bad option: what is wrong, with which value, and what to do. Thrown
// when the pipeline is defined (at import), long before a job runs.

export function invalid(pipeline: string, message: string, fix: string): never {
  throw new Error(`pipeline ${pipeline}: ${message}. ${fix}`);
}

export function checkInteger(where: string, field: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    invalid(where, `${field} ${value} is not an integer from ${min} to ${max}`, `Set ${field} within that range.`);
  }
}

/** A key a step declares (keys: [...]): a lower-case kind, a colon and a value, with {tenant}, {input.<path>}, {item} or {item.<path>} placeholders. */
const KEY_TEMPLATE = /^[a-z][a-z0-9_-]*(:.+)?$/;
const PLACEHOLDER = /\{([^{}]*)\}/g;
const PLACEHOLDER_NAME = /^(tenant|item|(input|item)(\.[A-Za-z0-9_-]+)+)$/;

export function checkKeys(where: string, step: string, keys: readonly string[] | undefined): readonly string[] | null {
  if (keys === undefined) return null;
  if (!Array.isArray(keys) || keys.length > 16) {
    invalid(where, `step "${step}": keys must be an array of at most 16 keys`, 'List the keys the step belongs to, e.g. keys: [\'queue:emails\', \'customer:{input.customerId}\'].');
  }
  for (const key of keys) {
    if (typeof key !== 'string' || !KEY_TEMPLATE.test(key) || Buffer.byteLength(key) > 300) {
      invalid(where, `step "${step}": key ${JSON.stringify(key)} is not valid`,
        'Use a lower-case kind, a colon and a value (e.g. queue:emails, customer:{input.customerId}), at most 300 bytes.');
    }
    for (const m of key.matchAll(PLACEHOLDER)) {
      if (!PLACEHOLDER_NAME.test(m[1]!)) {
        invalid(where, `step "${step}": key ${JSON.stringify(key)} has the placeholder {${m[1]}}`,
          'Use {tenant}, {input.<path>}, {item} or {item.<path>}.');
      }
    }
  }
  return [...new Set(keys)];
}

/** A step's weight for `weight` limits: a number from 0, or 'input.<path>' / 'item.<path>' naming a number. */
export function checkWeight(where: string, step: string, weight: number | string | undefined): number | string | null {
  if (weight === undefined) return null;
  if (typeof weight === 'number' ? !(Number.isFinite(weight) && weight >= 0 && weight <= 1e12)
    : !/^(input|item)(\.[A-Za-z0-9_-]+)+$/.test(weight)) {
    invalid(where, `step "${step}": weight ${JSON.stringify(weight)} is not valid`,
      'Use a number from 0 to 10^12, or \'input.<path>\' / \'item.<path>\' naming a number of the input or of the map item.');
  }
  return weight;
}
