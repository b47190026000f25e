// Versioned prompts. A prompt is a name, a version and two templates (system, user) with {{path}} placeholders; its
// content is stored in ballast.prompts with its sha256 (computed by Postgres) on first use, and every model call's trace names
// name@version and the hash, so a result can always be traced to the exact words that produced it. A version is
// immutable: changing the words under the same version is refused by Postgres (BA012).
//
// Rendering is a dozen lines rather than a template library: mustache and handlebars HTML-escape by default and
// render a missing variable as an empty string, and both are wrong for prompts. Here a missing variable is an error
// naming it, and a non-text value is inserted as JSON.
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
