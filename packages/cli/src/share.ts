/**
 * The bundled command's modules, shared with the user's plugins and config modules: before the
 * first import of user code (importUserModule in @ckpt/api), an ES module resolve/load hook makes
 * each shared name a module that re-exports the bundle's instance, and require() of those names
 * returns it. The hook thread costs some milliseconds, so only a command that loads user code
 * pays for it.
 */
import Module, { register } from 'node:module';
import { setUserImporter } from '@ckpt/api';

const INSTANCES = Symbol.for('ckpt.sharedModules');
/** Set by bin.ts: import() from a real ES module (code compiled by vm.Script has no loader). */
const ESM_IMPORT = Symbol.for('ckpt.esmImport');

/** Runs in the module hooks' thread: `data` maps each shared name to its export names. */
const HOOKS = `
let shared = {};
export function initialize(data) { shared = data; }
export function resolve(specifier, context, next) {
  if (Object.hasOwn(shared, specifier)) return { url: 'ckpt-shared:' + specifier, shortCircuit: true };
  return next(specifier, context);
}
export function load(url, context, next) {
  if (!url.startsWith('ckpt-shared:')) return next(url, context);
  const name = url.slice('ckpt-shared:'.length);
  const names = shared[name].filter((n) => n !== 'default');
  const source = 'const m = globalThis[Symbol.for("ckpt.sharedModules")][' + JSON.stringify(name) + '];\\n' +
    names.map((n, i) => 'const v' + i + ' = m[' + JSON.stringify(n) + '];\\n').join('') +
    'export { ' + names.map((n, i) => 'v' + i + ' as ' + JSON.stringify(n)).join(', ') + ' };\\n' +
    'export default ("default" in m ? m.default : m);\\n';
  return { format: 'module', source, shortCircuit: true };
}
`;

/** Each shared name's module, or a function that makes it (called once, when user code is first imported). */
export function shareModules(given: Record<string, object | (() => object)>): void {
  const esmImport = ((globalThis as Record<symbol, unknown>)[ESM_IMPORT] as ((url: string) => Promise<unknown>) | undefined) ?? ((url: string) => import(url));
  let installed = false;
  setUserImporter((url) => {
    if (!installed) install();
    return esmImport(url);
  });
  const modules: Record<string, object> = {};
  function install() {
    installed = true;
    for (const [name, m] of Object.entries(given)) modules[name] = typeof m === 'function' ? m() : m;
    (globalThis as Record<symbol, unknown>)[INSTANCES] = modules;
    const names = Object.fromEntries(Object.entries(modules).map(([name, ns]) => [name, Object.keys(ns)]));
    register(`data:text/javascript,${encodeURIComponent(HOOKS)}`, { data: names });
    const M = Module as unknown as { _load: (request: string, parent: unknown, isMain: boolean) => unknown };
    const load = M._load;
    M._load = function (request: string, parent: unknown, isMain: boolean) {
      if (!Object.hasOwn(modules, request)) return load.call(this, request, parent, isMain);
      // A CommonJS package whose exports are a function (debug) is that function to require().
      const ns = modules[request] as { default?: unknown };
      return typeof ns.default === 'function' ? ns.default : ns;
    };
  }
}
