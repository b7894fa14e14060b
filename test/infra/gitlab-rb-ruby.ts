/**
 * Checks a rendered gitlab.rb with Ruby itself: `ruby -c` (the parser GitLab's reconfigure uses),
 * then evaluates it the way the Linux package does — top-level calls like `gitlab_rails[...] = v`
 * on its settings objects, `external_url 'https://…'` as a method — and returns the settings as
 * JSON, so tests assert what GitLab would read rather than what the text looks like.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Json } from './synth.js';

/**
 * Top-level settings objects of the Linux package that our gitlab.rb may use; any other name (a
 * typo such as `gitlab_rail`) is an error, as it would be in `gitlab-ctl reconfigure`.
 */
const ROOTS = ['gitlab_rails', 'nginx', 'letsencrypt', 'postgresql', 'redis', 'gitlab_shell', 'gitlab_sshd'];

const HARNESS = `
require 'json'
ROOTS = ${JSON.stringify(ROOTS)}
class GitlabRb
  attr_reader :settings
  def initialize
    @settings = {}
  end
  def external_url(url)
    @settings['external_url'] = url
  end
  def method_missing(name, *args)
    raise NoMethodError, "gitlab.rb: unknown setting #{name}" unless ROOTS.include?(name.to_s) && args.empty?
    @settings[name.to_s] ||= Hash.new { |h, k| h[k] = Hash.new(&h.default_proc) }
  end
  def respond_to_missing?(name, include_private = false) = ROOTS.include?(name.to_s)
end
# The secret files exist only on the instance; stand-ins keep their paths visible in the output.
module SecretFiles
  def read(path, *rest)
    return "<secret from #{path}>" if path.to_s.start_with?('/etc/gitlab/secrets/')
    super
  end
end
File.singleton_class.prepend(SecretFiles)
rb = GitlabRb.new
rb.instance_eval(File.read(ARGV[0]), ARGV[0])
puts JSON.generate(rb.settings)
`;

export function evaluateGitlabRb(text: string): Json {
  const dir = mkdtempSync(join(tmpdir(), 'rf-gitlab-rb-'));
  try {
    const file = join(dir, 'gitlab.rb');
    const harness = join(dir, 'harness.rb');
    writeFileSync(file, text);
    writeFileSync(harness, HARNESS);
    execFileSync('ruby', ['-c', file], { stdio: ['ignore', 'pipe', 'pipe'] });
    return JSON.parse(
      execFileSync('ruby', [harness, file], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
