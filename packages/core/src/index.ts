/**
 * @ckpt/core: the pipeline (Ckpt), its hooks, the types plugins are written against, and the
 * services and helpers core guarantees to plugins. See docs/plugins.md.
 */
export { Ckpt, VERSION, type CkptInit, type DumpResult, type RestoreResult, type CompactOptions, type CompactResult } from './engine.js';
export {
  createHooks,
  DUMP_STAGES,
  RESTORE_STAGES,
  STATE_CLASSES,
  STAGE,
  type Hooks,
  type StateClass,
  type StateHooks,
  type FdRestoreHook,
  type TapWhen,
} from './hooks.js';
export type {
  CommonOptions,
  DumpOptions,
  RestoreOptions,
  SessionBase,
  DumpSession,
  ProcessDump,
  RestoreSession,
  ProcessRestore,
  FdDumpRequest,
  FdRecord,
  FdClaim,
  ZombieRecord,
  SharedWithParent,
  ProgressEvent,
  Compaction,
} from './context.js';
export {
  definePlugin,
  checkOptions,
  type CkptPlugin,
  type PluginRecord,
  type PluginContext,
  type PluginFlag,
  type PluginClaims,
  type PluginShow,
  type SocketRow,
} from './plugin.js';
export { createSessionState, SessionStateStore, type SessionStateKey } from './state.js';
export { randomHex, sha256Hex } from './random.js';
export { validate, issuePath, lazySchema, lazyOptions, type StandardSchemaV1, type StandardIssue, type InferOutput } from './schema.js';
export {
  s,
  Schema,
  ArraySchema,
  BooleanSchema,
  CheckedSchema,
  CustomSchema,
  DefaultSchema,
  EnumSchema,
  LiteralSchema,
  NullableSchema,
  NumberSchema,
  ObjectSchema,
  OptionalSchema,
  RefinedSchema,
  StringSchema,
  TupleSchema,
  UnionSchema,
  UnknownSchema,
  type Infer,
  type LiteralValue,
  type ObjectOutput,
  type SchemaCheck,
  type SchemaContext,
  type SchemaIssue,
  type SchemaShape,
  type TupleOutput,
} from './shape.js';
export {
  ImageReader,
  ImageWriter,
  IMAGE_FORMAT,
  IMAGE_VERSION,
  IMAGE_VERSION_MIN,
  entryDigest,
  MANIFEST,
  SIGNATURE_FILE,
  type Manifest,
  type ImageOpenOptions,
  type ImageSigner,
  type ProcessRecord,
  type BlobWriter,
  type FileEntry,
  type ImageWriterOptions,
} from './image.js';
export {
  KeyStore,
  defaultKeyDir,
  fingerprint,
  publicKeyPem,
  parsePublicKey,
  readPublicKeyFile,
  type HostKey,
  type TrustedKey,
  type TrustReason,
} from './keys.js';
export { CkptError, PluginError, errorMessage, type CkptErrorCode } from './errors.js';
export {
  Tracee,
  type BatchedSyscall,
  remoteClone,
  remoteCloneThreads,
  killTraced,
  findSyscallInsn,
  findFreeRange,
  restartAdjusted,
  SCRATCH_SIZE,
  TASK_SIZE,
  PROT_READ,
  PROT_WRITE,
  PROT_EXEC,
  MAP_SHARED,
  MAP_PRIVATE,
  MAP_FIXED,
  MAP_ANONYMOUS,
  MAP_GROWSDOWN,
  MAP_FIXED_NOREPLACE,
} from './tracee.js';
export * as procfs from './proc.js';
export { devName } from './proc.js';
export type { Vma, FdInfo, ProcStat } from './proc.js';
export {
  ProcessControl,
  createContainer,
  sessionServices,
  staleGuardMappings,
  seccompSuspendedInStubs,
  type StaleGuard,
  PROCESS_CONTROL,
  IMAGE_STORE,
  NETWORK_LOCK,
  LOGGER,
  type Services,
  type ServiceToken,
  type ImageStore,
} from './services.js';
export { socketGuard, SocketGuard } from './sockguard.js';
export { NftNetworkLocks, LOCKS_DIR, REPLAY_MARK, type NetworkLock, type NetworkLocks, type InetAddr, type StaleLock } from './netlock.js';
export { descriptionName, fdKind, fileId, openDescriptions, type OpenDescription } from './fdtable.js';
export { makeWhereItWas, relocatePath } from './paths.js';
export {
  generations,
  latestGeneration,
  commitGeneration,
  stagingName,
  resolveImage,
  removeStaleStaging,
  deadDumps,
  ownerAlive,
  selfOwner,
  LATEST,
  DUMPS_DIR,
  type DeadDump,
  type Owner,
} from './imagedir.js';
export { fault, resetFaults } from './fault.js';
export { collectGarbage } from './gc.js';
export { PageClient, parsePageServer, newNonce, type PageServerAddress } from './pageclient.js';
export { canRestore, effectiveCaps, hasCap, CAP_CHECKPOINT_RESTORE, CAP_SYS_ADMIN, CAP_SYS_PTRACE } from './caps.js';
export { logger, enableLogging, type Logger } from './log.js';
export { saveShmem, saveMappedShmem, sealShmem, shmemFd, isShmemRef, type ShmemKind, type ShmemRef } from './shmem.js';
export {
  remoteOpen,
  readThroughFd,
  withSignalsHeld,
  remoteGetsockopt,
  takeFd,
  sleepSync,
  reapWithin,
  inOurNetns,
  isChildSubreaper,
  isChildSubreaperEach,
  spawnHelper,
  type RemoteOpenOptions,
} from './helpers.js';
export { readSocketFilter, attachSocketFilter, type SocketFilter } from './sockfilter.js';
