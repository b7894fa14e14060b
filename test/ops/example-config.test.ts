import { readFileSync } from 'node:fs';
import { expect, it } from 'vitest';
import { parseConfigText } from '../../manager/config/load.js';

it('config.example.toml documents the ops sections with their defaults, and is valid', () => {
  const text = readFileSync(new URL('../../config.example.toml', import.meta.url), 'utf8');
  const config = parseConfigText(text, 'config.example.toml');
  expect(config.service).toEqual({ user: 'gitlab-runner', stop_timeout: 900_000 });
  expect(config.image.manifest_parameter_prefix).toBe('/runner-fleet/ami');
  for (const key of [
    'url',
    'runner_token_parameter',
    'runner_token_file',
    'bucket',
    'region',
    'server_address',
  ])
    expect(text).toMatch(new RegExp(`^# ${key} = `, 'm'));
});
