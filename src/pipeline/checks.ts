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
