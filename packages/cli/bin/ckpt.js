#!/usr/bin/env node
// Stable entry for the `ckpt` bin (exists before the build, so npm can link it on install).
import('../dist/bin.js').catch((e) => {
  if (e && e.code === 'ERR_MODULE_NOT_FOUND') {
    process.stderr.write('ckpt: error: ckpt is not built yet; run `npm run build` at the repository root\n');
    process.exit(1);
  }
  throw e;
});
