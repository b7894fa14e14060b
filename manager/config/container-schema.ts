/**
 * [container]: jobs that name an `image:` (or get default_image) run their user stages in a
 * Docker container on their instance. The checks mirror gitlab-runner's docker executor.
 */
import { z } from 'zod';
import { compileGlob, GlobError } from '../credentials/glob.js';
import { duration } from './zod-duration.js';

const pullPolicy = z.enum(['always', 'if-not-present', 'never']);

const globList = z.array(
  z.string().superRefine((pattern, ctx) => {
    try {
      compileGlob(pattern);
    } catch (error) {
      if (!(error instanceof GlobError)) throw error;
      ctx.addIssue({ code: 'custom', message: `invalid glob ${JSON.stringify(pattern)}: ${error.message}` });
    }
  }),
);

export const containerSchema = z
  .strictObject({
    /** Image for jobs that name none; unset: such jobs run on the instance itself. */
    default_image: z.string().min(1).optional(),
    /** Globs over full image names (`*` within a path segment, `**` across); empty: any image. */
    allowed_images: globList.default([]),
    allowed_services: globList.default([]),
    /** Pull policies a job may ask for; empty: any. */
    allowed_pull_policies: z.array(pullPolicy).default([]),
    /** Pull policy of images whose job names none; tried in order. */
    pull_policy: z.array(pullPolicy).min(1).default(['always']),
    /** DOCKER_HOST for the docker CLI on the instance; default: the CLI's (DOCKER_HOST, else the socket). */
    docker_host: z
      .string()
      .regex(/^(unix|tcp|ssh|npipe|fd):\/\//, 'a DOCKER_HOST URL like unix:///var/run/docker.sock')
      .optional(),
    /** How long to wait for a service's exposed ports before going on with a warning. */
    service_wait_timeout: duration('30s'),
    /** A docker config.json (DOCKER_AUTH_CONFIG) with registry credentials, read by prepare. */
    docker_auth_config_file: z.string().startsWith('/').optional(),
  })
  .prefault({});

export type ContainerConfig = z.output<typeof containerSchema>;
