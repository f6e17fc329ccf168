/**
 * Paths of the image as they are opened at restore. `--relocate OLD=NEW` is core's, not one
 * plugin's: every plugin that reopens a path (files, mappings, inotify watches, sockets bound to
 * a path) goes through `session.relocate(path)`, so one flag moves all of them alike.
 */

/** --relocate: the first [old, new] whose old is the path or one of its parent directories. */
export function relocatePath(path: string, relocate: ReadonlyArray<readonly [string, string]> | undefined): string {
  for (const [from, to] of relocate ?? []) {
    const f = from.replace(/\/+$/, '');
    if (path === f) return to;
    if (path.startsWith(f + '/')) return to.replace(/\/+$/, '') + path.slice(f.length);
  }
  return path;
}
