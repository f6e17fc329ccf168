// Registration only: each feature file exports its own functions.
#include "common.h"

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  ckpt::InitErrors(env, exports);
  ckpt::InitPtrace(env, exports);
  ckpt::InitMemory(env, exports);
  ckpt::InitSpawn(env, exports);
  ckpt::InitFd(env, exports);
  ckpt::InitIpc(env, exports);
  ckpt::InitSock(env, exports);
  ckpt::InitUnix(env, exports);
  ckpt::InitInet(env, exports);
  ckpt::InitPacket(env, exports);
  ckpt::InitNetif(env, exports);
  ckpt::InitInotify(env, exports);
  ckpt::InitHash(env, exports);
  ckpt::InitSign(env, exports);
  ckpt::InitZstd(env, exports);
  return exports;
}

NODE_API_MODULE(ckpt_native, Init)
