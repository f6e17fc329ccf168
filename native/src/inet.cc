// Inet sockets: owned by the @ckpt/plugin-tcp work (fill in).
#include "common.h"

namespace ckpt {

void InitInet(Napi::Env env, Napi::Object exports) {
  (void)env;
  (void)exports;
}

}  // namespace ckpt
