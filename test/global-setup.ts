/**
 * Once per test run: the runner-fleet tarball the fleet stack ships as a CDK asset, packed from
 * this checkout's dist/ (`npm test` builds first) exactly as `npm run synth` does.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';

export default function setup(): void {
  const root = join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..');
  if (!existsSync(join(root, 'dist', 'cli.js'))) return; // nothing built: the infra tests will say so
  mkdirSync(join(root, 'dist', 'pack'), { recursive: true });
  execFileSync('npm', ['run', '--silent', 'pack:asset'], { cwd: root, stdio: 'inherit' });
}
