/**
 * Imports of the user's code (plugins, config modules). The bundled `ckpt` command carries its own
 * instance of @ckpt/core and of the libraries plugins share with it; a plugin must get those same
 * instances (one Container, one CkptError class, one set of hooks), not a second copy from
 * node_modules. So the command registers the importer used here, which installs module hooks
 * first (packages/cli/src/share.ts); it is also how the bundle, compiled through vm.Script,
 * reaches Node's ES module loader. Used as a library, nothing is registered: a plain import().
 */
const IMPORTER = Symbol.for('ckpt.userImporter');

type Importer = (url: string) => Promise<unknown>;

/** Imports a user's plugin or config module (a file: URL). */
export function importUserModule(url: string): Promise<unknown> {
  const importer = (globalThis as Record<symbol, unknown>)[IMPORTER] as Importer | undefined;
  return importer ? importer(url) : import(url);
}

/** Sets the importer importUserModule uses. */
export function setUserImporter(importer: Importer): void {
  (globalThis as Record<symbol, unknown>)[IMPORTER] = importer;
}
