/**
 * `ckpt show`: what an image holds, for people (text) and programs (--json). Core's part (the
 * tree, the fd table, the files) is described here; each plugin describes its own records
 * through its `show` functions, so this file knows no plugin.
 */
import {
  descriptionName,
  fileId,
  generations,
  openDescriptions,
  latestGeneration,
  IMAGE_STORE,
  type Ckpt,
  type CkptPlugin,
  type FdRecord,
  type ImageSigner,
  type ProcessRecord,
  type SocketRow,
  entryDigest,
} from '@ckpt/core';

/** A name for an open file description: core's descriptionName, else its kind. */
function fdName(byName: Map<string, CkptPlugin>, f: FdRecord, pid: number): string {
  return descriptionName(byName.get(f.owner), f, pid) ?? f.kind;
}

/** One line per open file description: type|id|name|pid:fd,... (ids for restore --substitute). */
export function openFiles(plugins: readonly CkptPlugin[], procs: ProcessRecord[]): Array<{ type: string; id: string; name: string; holders: string[] }> {
  const byName = new Map(plugins.map((p) => [p.name, p]));
  return openDescriptions(procs).map((d) => ({ type: d.record.kind, id: fileId(d.pid, d.fd), name: fdName(byName, d.record, d.pid), holders: d.holders }));
}

function sockets(plugins: readonly CkptPlugin[], procs: ProcessRecord[]): SocketRow[] {
  return plugins.flatMap((p) => p.show?.sockets?.(procs) ?? []);
}

/** "SHA256:... (this host's key)", or "... (NOT trusted here: ...)". */
function signerLine(s: ImageSigner): string {
  const why =
    s.trust === 'host'
      ? "this host's key"
      : s.trust === 'trusted'
        ? 'a trusted key'
        : s.trust === 'given'
          ? 'trusted for this command'
          : 'NOT trusted here: restore refuses it; `ckpt trust KEYFILE` trusts it, restore --trust-key KEYFILE for one restore';
  return `${s.fingerprint} (ed25519, ${why})`;
}

export function showImage(ckpt: Ckpt, dir: string, opts: { json?: boolean; verify?: boolean; files?: boolean; generation?: number }): string {
  // An image signed by a key this host does not trust is shown (with who signed it); its signature must be valid.
  const image = ckpt.container.get(IMAGE_STORE).open(dir, { generation: opts.generation, requireTrust: false });
  const gens = generations(dir);
  const latest = latestGeneration(dir);
  const plugins = ckpt.plugins;
  const procs = image.processes();
  if (opts.files) {
    const files = openFiles(plugins, procs);
    return opts.json ? JSON.stringify(files, null, 1) : files.map((f) => `${f.type}|${f.id}|${f.name}|${f.holders.join(',')}`).join('\n');
  }
  // An incremental image: its chain is checked (each image's signature, trust aside, and the
  // manifest it was made against), and with --verify every file of every image of it.
  const chain = image.chain();
  if (opts.verify) for (const i of chain) i.verifyAll();
  const sections = plugins.flatMap((p) => {
    const s = p.show?.image?.(image, procs);
    return s ? [s] : [];
  });
  const socks = sockets(plugins, procs);
  if (opts.json) {
    return JSON.stringify(
      {
        dir: image.dir,
        generations: gens,
        latest,
        signature: { ...image.signer, trusted: image.signer.trust !== null },
        manifest: image.manifest,
        processes: procs.map((p) => ({ pid: p.pid, ppid: p.ppid, pgid: p.pgid, sid: p.sid, comm: p.comm, fds: p.fds, records: p.records })),
        zombies: image.manifest.zombies ?? [],
        chain: chain.slice(1).map((i) => i.dir),
        ...Object.fromEntries(sections.map((s) => [s.key, s.json])),
        sockets: socks,
        verified: !!opts.verify,
      },
      null,
      1,
    );
  }
  const m = image.manifest;
  const out: string[] = [];
  out.push(`image ${image.dir}`);
  if (gens.length) out.push(`  generations in ${dir}: ${gens.map((g) => (g === latest ? `${g} (latest)` : String(g))).join(', ')}`);
  out.push(`  format ${m.format} v${m.version}, made ${m.createdAt} by ${m.tool} on ${m.host.hostname} (kernel ${m.host.kernel}, ${m.host.arch})`);
  out.push(`  signed by ${signerLine(image.signer)}`);
  if (chain.length > 1) {
    out.push(
      `  incremental: adds to ${chain[1].dir}; the chain (${chain.length - 1} image${chain.length > 2 ? 's' : ''} above this one) must stay to restore it:`,
    );
    for (const i of chain.slice(1)) out.push(`    ${i.dir}${i.manifest.parent ? '' : '  (full image)'}`);
  }
  out.push(`  plugins: ${Object.keys(m.plugins).join(', ')}`);
  out.push(`  process tree (${procs.length} processes${m.zombies?.length ? `, ${m.zombies.length} zombies` : ''}):`);
  out.push('    PID     PPID    PGID    SID     COMMAND');
  for (const p of procs) out.push(`    ${[p.pid, p.ppid, p.pgid, p.sid].map((x) => String(x).padEnd(8)).join('')}${p.comm}`);
  for (const z of m.zombies ?? [])
    out.push(`    ${[z.pid, z.ppid, z.pgid, z.sid].map((x) => String(x).padEnd(8)).join('')}[${z.comm}] <zombie, status ${z.exitCode}>`);
  const byName = new Map(plugins.map((p) => [p.name, p]));
  for (const p of procs) {
    out.push(`process ${p.pid} (${p.comm}) ppid ${p.ppid} pgid ${p.pgid} sid ${p.sid}`);
    for (const [name, rec] of Object.entries(p.records)) for (const line of byName.get(name)?.show?.process?.(rec, p) ?? []) out.push(`  ${line}`);
    out.push(`  ${p.fds.length} fds:`);
    for (const f of p.fds) {
      const what = f.sameAs ? `same open file as fd ${f.sameAs.fd}${f.sameAs.pid !== p.pid ? ` of pid ${f.sameAs.pid}` : ''}` : fdName(byName, f, p.pid);
      const d = f.data as { pos?: number; pipe?: { data?: string } } | undefined;
      const queued = d?.pipe?.data ? `, ${Buffer.from(d.pipe.data, 'base64').length} bytes queued` : '';
      out.push(
        `    fd ${String(f.fd).padEnd(3)} ${f.kind.padEnd(9)} ${what}${d?.pos ? ` @${d.pos}` : ''}${queued}${f.cloexec ? ' (cloexec)' : ''}  [${f.owner}]`,
      );
    }
  }
  for (const s of sections) out.push(...s.lines.map((l) => `  ${l}`));
  if (socks.length) {
    out.push('  sockets (RECV-Q: bytes queued to it; SEND-Q: bytes it sent, queued in its peer):');
    out.push('    FAMILY TYPE       STATE                    RECV-Q   SEND-Q   HOLDERS        LOCAL -> REMOTE');
    for (const k of socks) {
      out.push(
        `    ${k.family.padEnd(6)} ${k.type.padEnd(10)} ${k.state.padEnd(24)} ${String(k.recvQ).padEnd(8)} ${String(k.sendQ).padEnd(8)} ${k.holders.join(',').padEnd(14)} ${k.local || '(unnamed)'} -> ${k.remote || '-'}${k.note ? `  (${k.note})` : ''}`,
      );
    }
  }
  out.push('  files:');
  for (const [name, e] of Object.entries(m.files))
    out.push(`    ${name.padEnd(22)} ${String(e.size).padStart(12)} bytes  ${entryDigest(e)?.alg ?? '?'} ${entryDigest(e)?.hex.slice(0, 16) ?? ''}…`);
  if (opts.verify) out.push(`  signature valid; every file matches its digest${chain.length > 1 ? ', in every image of the chain' : ''}`);
  return out.join('\n');
}
