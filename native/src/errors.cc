#include "common.h"
#include <cstring>

namespace ckpt {

void ThrowErrno(Napi::Env env, int err, const char* syscall, long pid) {
  const char* name = strerrorname_np(err);
  std::string msg = std::string(syscall) + (pid >= 0 ? "(" + std::to_string(pid) + ")" : "") +
                    ": " + strerror(err);
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("code", Napi::String::New(env, name ? name : "EUNKNOWN"));
  e.Set("syscall", Napi::String::New(env, syscall));
  if (pid >= 0) e.Set("pid", Napi::Number::New(env, pid));
  e.ThrowAsJavaScriptException();
}

void ThrowMsg(Napi::Env env, const std::string& code, const std::string& msg) {
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("code", Napi::String::New(env, code));
  e.ThrowAsJavaScriptException();
}

}  // namespace ckpt
