/**
 * The groups of the facade: which addon function lives in which `native.<group>`. The one table
 * the facade is built from; its types (./binding.d.ts, NativeFacade) are checked against it, so
 * a function missing here, or listed in the wrong group, fails to type-check.
 *
 * ckpt 0.1 had a flat facade (`native.seize`); two of its functions were merged away since:
 * unixListen -> sock.sockListen, unixSetsockopt -> sock.sockSetBytes.
 */
import type { NativeFacade } from './binding.js';

export const GROUPS = {
  ptrace: [
    'seize',
    'interruptAndWait',
    'waitStop',
    'cont',
    'detach',
    'setOptions',
    'seccompFilters',
    'takeSuppressedSignals',
    'getRegs',
    'setRegs',
    'getXstate',
    'setXstate',
    'getSigmask',
    'setSigmask',
    'getRseq',
    'getRobustList',
    'peekSiginfo',
    'remoteSyscall',
    'remoteRun',
    'faultStep',
    'faultSteps',
  ],
  mem: [
    'pagemapRuns',
    'pagemapScan',
    'dumpPages',
    'restorePages',
    'readMem',
    'writeMem',
    'uffdApi',
    'uffdProbe',
    'uffdRegisterWp',
    'uffdWriteProtect',
    'uffdApiLazy',
    'uffdRegisterMissing',
    'restorePagesZstd',
    'zstdAvailable',
    'zstdWriter',
    'zstdFinish',
    'zstdReader',
    'zstdDecompressFile',
  ],
  hash: ['hashNew', 'hashUpdate', 'hashDigest', 'hashOf', 'hashFile'],
  proc: ['spawnStub', 'spawnDetached', 'pidfdOpen', 'pidfdGetfd', 'kcmp', 'kcmpEpollTfd', 'tryWait'],
  fd: ['pipe', 'pipeSize', 'peekPipe', 'fcntl', 'lseek', 'memfdCreate', 'mknod', 'getOwnerEx', 'openByHandleAt', 'ioctlPtr', 'ioctlVal', 'pollNow'],
  events: ['eventfd', 'epollCreate', 'signalfd', 'timerfd', 'inotifyInit', 'inotifyAddWatch', 'inotifyRmWatch', 'fanotifyInit', 'fanotifyMark'],
  ipc: ['ipcSnapshot', 'ipcCreate', 'ipcRemove'],
  sock: [
    'sockGetInt',
    'sockSetInt',
    'sockGetBytes',
    'sockSetBytes',
    'sockListen',
    'sockBindRaw',
    'unixDiag',
    'unixNetns',
    'unixSocket',
    'unixSocketpair',
    'unixBind',
    'unixConnect',
    'unixAccept',
    'unixShutdown',
    'unixGetsockopt',
    'unixName',
    'unixPeek',
    'unixSend',
    'inetSocket',
    'sockInfo',
    'sockBind',
    'sockConnect',
    'tcpRepair',
    'tcpDumpConn',
    'tcpSetQueueSeqs',
    'tcpRepairFill',
    'udpPeek',
    'udpInject',
    'tcpDiag',
    'inetShutdown',
    'tcpDestroy',
    'packetDiag',
    'netifAddrs',
    'netifAddAddr',
    'tcpShutdownRepair',
    'tcpInject',
  ],
} as const satisfies { readonly [G in keyof NativeFacade]: ReadonlyArray<keyof NativeFacade[G]> };

// Every function of every group's interface is listed: `Unlisted` names the ones that are not.
type Unlisted = { [G in keyof NativeFacade]: Exclude<keyof NativeFacade[G], (typeof GROUPS)[G][number]> }[keyof NativeFacade];
const everyFunctionListed: [Unlisted] extends [never] ? true : { unlisted: Unlisted } = true;
void everyFunctionListed;
