/**
 * @ckpt/api: ckpt as a library. `createCkpt()` gives a Ckpt with the configured and built-in
 * plugins (what the `ckpt` command runs); the config and plugin loaders and the registry of
 * applications started by `ckpt run` are here for other front ends.
 */
export { builtinPlugins, createCkpt, Ckpt, type CreateOptions } from './ckpt.js';
export { loadConfig, parseConfig, mergePluginOptions, CONFIG_FILES, type CkptConfig, type LoadConfigOptions, type PluginSpec } from './config.js';
export { BUILTIN_PLUGIN_NAMES, configSchema, configJsonSchema, type BuiltinPluginName, type CkptConfigInput } from './schema.js';
export { loadPlugin, resolvePlugin, globalPackageDirs } from './pluginLoader.js';
export { importUserModule, setUserImporter } from './userImport.js';
export {
  APPS_DIR,
  appInitOf,
  dumpTarget,
  findApp,
  isAppInit,
  listApps,
  mainOf,
  newAppId,
  registerApp,
  resolveApp,
  writeApp,
  checkpointerAlive,
  type AppEntry,
  type CheckpointerEntry,
} from './apps.js';
export { CkptError, definePlugin, type CkptPlugin, type DumpOptions, type DumpResult, type RestoreOptions, type RestoreResult } from '@ckpt/core';
