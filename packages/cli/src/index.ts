/**
 * Programmatic entry of @ckpt/cli, kept for compatibility: the library is @ckpt/api, which this
 * re-exports (createCkpt, builtinPlugins, Ckpt, the config and plugin loaders, ...).
 */
export * from '@ckpt/api';
