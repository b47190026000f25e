// Versioned prompts. A prompt is a name, a version and two templates (system, user) with {{path}} placeholders; its
// content is stored in ballast.prompts with its sha256 (computed by Postgres) on first use, and every model call's trace names
// name@version and the hash, so a result can always be traced to the exact words that produced it. A version is
// immutable: changing the words under the same version is refused by Postgres (BA012).
//
// Rendering is a dozen lines rather than a template library: mustache and handlebars HTML-escape by default and
// render a missing variable as an empty string, and both are wrong for prompts. Here a missing variable is an error
// naming it, and a non-text value is inserted as JSON.
//
// A model step names its prompt in one of three ways (docs/prompts.md):
//   prompt({ name, version, system, user })   a version defined in code, stored on first use;
//   promptLabel('review.rate', 'production')  whatever version the label points at when the job first resolves it
//   or 'review.rate@production'               (pinned for the job: its later steps, retries and replays keep it);
//   storedPrompt('review.rate', 3)            a version stored in Postgres (created from SQL, GraphQL or the CLI).
//   or 'review.rate@3'
export interface PromptDefinition {
  /** Lower-case letter, then up to 62 lower-case letters, digits, "_", "." or "-". */
  name: string;
  version: number;
  system?: string;
  /** The user message, e.g. "Extract the invoice fields from:\n{{input.text}}". */
  user: string;
}

const NAME = /^[a-z][a-z0-9_.-]{0,62}$/;
const PLACEHOLDER = /\{\{\s*([A-Za-z_$][\w$]*(?:\.[\w$]+)*)\s*\}\}/g;

export class Prompt {
  readonly name: string;
  readonly version: number;
  readonly system: string | null;
  readonly user: string;

  constructor(def: PromptDefinition) {
    if (!NAME.test(def.name)) {
      throw new Error(`prompt name "${def.name}" is not valid: use a lower-case letter, then up to 62 lower-case letters, digits, "_", "." or "-".`);
    }
    if (!Number.isInteger(def.version) || def.version < 1) {
      throw new Error(`prompt ${def.name}: version ${def.version} is not a positive integer. Number prompt versions 1, 2, 3...`);
    }
    if (typeof def.user !== 'string' || def.user.trim() === '') {
      throw new Error(`prompt ${def.name}@${def.version}: user is empty. Give the user message template.`);
    }
    this.name = def.name;
    this.version = def.version;
    this.system = def.system ?? null;
    this.user = def.user;
  }

  get ref(): string {
    return `${this.name}@${this.version}`;
  }

  /** What ballast.prompts stores. */
  template(): { system: string | null; user: string } {
    return { system: this.system, user: this.user };
  }

  /** Fills the placeholders from `vars`; throws naming the first placeholder that has no value. */
  render(vars: Record<string, unknown>): { system: string | undefined; user: string } {
    return { system: this.system === null ? undefined : fill(this.system, vars, this.ref), user: fill(this.user, vars, this.ref) };
  }
}

function lookup(vars: Record<string, unknown>, path: string): unknown {
  let value: unknown = vars;
  for (const key of path.split('.')) {
    if (value === null || typeof value !== 'object' || !Object.hasOwn(value, key)) return undefined;
    value = (value as Record<string, unknown>)[key];
  }
  return value;
}

function fill(template: string, vars: Record<string, unknown>, ref: string): string {
  return template.replace(PLACEHOLDER, (_, path: string) => {
    const value = lookup(vars, path);
    if (value === undefined) {
      throw new Error(`prompt ${ref}: placeholder {{${path}}} has no value. Available: ${Object.keys(vars).join(', ') || '(none)'}; return it from the step's vars().`);
    }
    return typeof value === 'string' ? value : JSON.stringify(value);
  });
}

/** Defines a prompt version: `prompt({ name: 'invoice.extract', version: 2, system, user })`. */
export function prompt(def: PromptDefinition): Prompt {
  return new Prompt(def);
}

/** A label of a prompt (production, staging, ...): the version is chosen per job when it first runs, and pinned. */
export class PromptLabel {
  readonly name: string;
  readonly label: string;

  constructor(name: string, label: string) {
    if (!NAME.test(name)) throw new Error(`prompt name "${name}" is not valid: use a lower-case letter, then up to 62 lower-case letters, digits, "_", "." or "-".`);
    if (!NAME.test(label)) throw new Error(`prompt ${name}: label "${label}" is not valid: use a lower-case letter, then up to 62 lower-case letters, digits, "_", "." or "-" (e.g. production).`);
    this.name = name;
    this.label = label;
  }

  get ref(): string {
    return `${this.name}@${this.label}`;
  }
}

/** A fixed version stored in ballast.prompts (e.g. created with ballast.create_prompt_version): read when used. */
export class StoredPrompt {
  readonly name: string;
  readonly version: number;

  constructor(name: string, version: number) {
    if (!NAME.test(name)) throw new Error(`prompt name "${name}" is not valid: use a lower-case letter, then up to 62 lower-case letters, digits, "_", "." or "-".`);
    if (!Number.isInteger(version) || version < 1) throw new Error(`prompt ${name}: version ${version} is not a positive integer.`);
    this.name = name;
    this.version = version;
  }

  get ref(): string {
    return `${this.name}@${this.version}`;
  }
}

/** What a model step's `prompt` may be: a prompt defined in code, a label, a stored version, or 'name@label' / 'name@3'. */
export type PromptRef = Prompt | PromptLabel | StoredPrompt;
export type PromptOption = PromptRef | string;

/** `promptLabel('review.rate', 'production')`: the version the label points at, chosen and pinned per job. */
export function promptLabel(name: string, label: string): PromptLabel {
  return new PromptLabel(name, label);
}

/** `storedPrompt('review.rate', 3)`: a version stored in Postgres, e.g. created from SQL. */
export function storedPrompt(name: string, version: number): StoredPrompt {
  return new StoredPrompt(name, version);
}

/** The prompt a step names: 'name@label' is a label, 'name@3' a stored version; objects are returned as they are. */
export function promptRef(option: PromptOption): PromptRef {
  if (option instanceof Prompt || option instanceof PromptLabel || option instanceof StoredPrompt) return option;
  if (typeof option !== 'string') throw new Error('prompt must be a prompt({...}), a promptLabel(name, label), a storedPrompt(name, version) or a string "name@label"');
  const at = option.indexOf('@');
  if (at < 0) throw new Error(`prompt "${option}" names no label or version: write "${option}@production" (a label) or "${option}@1" (a version).`);
  const name = option.slice(0, at);
  const after = option.slice(at + 1);
  return /^[0-9]+$/.test(after) ? new StoredPrompt(name, Number(after)) : new PromptLabel(name, after);
}
