/**
 * Applications started by `ckpt run`: the registry lives in @ckpt/api (so that other front ends
 * can find and register applications too); re-exported here for the command's own modules.
 */
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
  type AppEntry,
} from '@ckpt/api';
