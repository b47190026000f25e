// The development JWT secret: without BALLAST_JWT_SECRET, `npm start` (and `ballast token`) keep a random HS256
// secret in .ballast/jwt-secret (git-ignored, mode 0600), so tokens minted with `ballast token` work against the
// local server across restarts. Never used when NODE_ENV=production: there the secret (or a JWKS) is configured.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isProduction } from './config.ts';

export function jwtSecretFile(dataDir: string): string {
  return join(dataDir, 'jwt-secret');
}

/** BALLAST_JWT_SECRET, else (outside production) the development secret, created when `create` is set. */
export function resolveJwtSecret(dataDir: string, create: boolean, env: NodeJS.ProcessEnv = process.env): { secret: string | undefined; source: string } {
  if (env.BALLAST_JWT_SECRET) return { secret: env.BALLAST_JWT_SECRET, source: 'BALLAST_JWT_SECRET' };
  if (isProduction(env)) return { secret: undefined, source: 'none' };
  const file = jwtSecretFile(dataDir);
  if (existsSync(file)) return { secret: readFileSync(file, 'utf8').trim(), source: file };
  if (!create) return { secret: undefined, source: 'none' };
  mkdirSync(dataDir, { recursive: true });
  writeFileSync(file, randomBytes(48).toString('base64url') + '\n', { mode: 0o600 });
  return { secret: readFileSync(file, 'utf8').trim(), source: `${file} (new)` };
}
