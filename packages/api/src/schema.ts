/**
 * The shape of a ckpt config (ckpt.config.json, .ckptrc.json, the "ckpt" key of package.json,
 * or the default export of ckpt.config.mjs/.js/.cjs), as a zod schema.
 *
 * This module imports nothing but zod, on purpose: scripts/gen-schema.mjs loads it at build time
 * to write schema/ckpt.config.schema.json (for editors) without loading the plugins and the native
 * engine behind the package's index.
 *
 * Plugin options are only required to be objects here: each plugin carries its own schema for
 * them, which core checks when the Ckpt is built.
 */
import { lazySchema } from '@ckpt/core';
import { z } from 'zod';

/** The built-in plugins, in the order they are applied (after the user's). */
export const BUILTIN_PLUGIN_NAMES = [
  '@ckpt/plugin-callbacks',
  '@ckpt/plugin-pids',
  '@ckpt/plugin-memory',
  '@ckpt/plugin-tty',
  '@ckpt/plugin-file-content',
  '@ckpt/plugin-unix-socket',
  '@ckpt/plugin-tcp',
  '@ckpt/plugin-netlink',
  '@ckpt/plugin-packet',
  '@ckpt/plugin-tun',
  '@ckpt/plugin-files',
  '@ckpt/plugin-event-fds',
  '@ckpt/plugin-file-locks',
  '@ckpt/plugin-task',
  '@ckpt/plugin-sysv-ipc',
  '@ckpt/plugin-registers',
] as const;

export type BuiltinPluginName = (typeof BUILTIN_PLUGIN_NAMES)[number];

const pluginOptions = lazySchema(() => z.record(z.string(), z.unknown()).describe("A plugin's options (checked by the plugin's own schema)."));

const pluginName = lazySchema(() =>
  z
    .string()
    .min(1)
    .describe(
      "A package name (resolved like Node does, from the config file's directory up, then the global packages) or a path to a module, relative to the config file.",
    ),
);

export const pluginSpecSchema = lazySchema(() => z.union([pluginName, z.tuple([pluginName, pluginOptions])]));

export const configSchema = lazySchema(() =>
  z
    .strictObject({
      $schema: z.string().optional().describe('The JSON schema of this file, for editors (ignored by ckpt).'),
      plugins: z
        .array(pluginSpecSchema)
        .default([])
        .describe('Plugins to load before the built-in ones, in order: a package name or path, or a [name, options] pair.'),
      builtins: z.boolean().default(true).describe('Load the built-in plugins (default true).'),
      disable: z.array(z.enum(BUILTIN_PLUGIN_NAMES)).default([]).describe('Built-in plugins to leave out, e.g. "@ckpt/plugin-tty".'),
      options: z
        .record(z.string(), pluginOptions)
        .default({})
        .describe('Plugin options by plugin name (built-in or not); merged with the options of a [name, options] pair, which win.'),
      files: pluginOptions.optional().describe('Options of @ckpt/plugin-files (e.g. "rules"); the same as options["@ckpt/plugin-files"].'),
    })
    .describe('ckpt configuration'),
);

/** A config file as written (before defaults). */
export type CkptConfigInput = z.input<typeof configSchema>;
/** A config file as validated (with defaults). */
export type CkptConfigParsed = z.output<typeof configSchema>;

/** The keys a config may have (for "did you mean ..." on a misspelled one). */
export const configKeys = (): string[] => Object.keys(configSchema.shape);

/**
 * The JSON schema published as @ckpt/api/schema.json. Draft 7, because that is the draft editors
 * (VS Code's JSON language service in particular) understand fully; "input" so that keys with
 * defaults are not marked required.
 */
export function configJsonSchema(): Record<string, unknown> {
  const schema = z.toJSONSchema(configSchema, { target: 'draft-7', io: 'input' }) as Record<string, unknown>;
  return { ...schema, title: 'ckpt.config.json' };
}
