// Unix sockets: owned by the @ckpt/plugin-unix-socket work (fill in).
#include "common.h"

namespace ckpt {

void InitUnix(Napi::Env env, Napi::Object exports) {
  (void)env;
  (void)exports;
}

}  // namespace ckpt
