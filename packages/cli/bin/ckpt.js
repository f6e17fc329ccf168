#!/usr/bin/env node
// Stable entry for the `ckpt` bin (exists before the build, so npm can link it on install).
// CommonJS (bin/package.json): Node's ES module loader would cost some 15 ms at every start.
try {
  require.resolve('../dist/bin.cjs');
} catch {
  process.stderr.write('ckpt: error: ckpt is not built yet; run `npm run build` at the repository root\n');
  process.exit(1);
}
require('../dist/bin.cjs');
