#include "common.h"
#include <cstring>

namespace ckpt {

std::string ErrnoName(int err) {
  // glibc >= 2.32 names every errno it knows ("EADDRINUSE"); NULL for numbers it does not.
  const char* name = strerrorname_np(err);
  return name ? std::string(name) : "E" + std::to_string(err);
}

Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall, long pid) {
  std::string msg = std::string(syscall) + (pid >= 0 ? "(" + std::to_string(pid) + ")" : "") +
                    ": " + strerror(err);
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("code", Napi::String::New(env, ErrnoName(err)));
  e.Set("syscall", Napi::String::New(env, syscall));
  if (pid >= 0) e.Set("pid", Napi::Number::New(env, pid));
  return e;
}

void ThrowErrno(Napi::Env env, int err, const char* syscall, long pid) {
  ErrnoError(env, err, syscall, pid).ThrowAsJavaScriptException();
}

void ThrowErrnoMsg(Napi::Env env, int err, const std::string& msg) {
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("code", Napi::String::New(env, ErrnoName(err)));
  e.ThrowAsJavaScriptException();
}

namespace {

// errnoName(n) -> 'EADDRINUSE', ...; 'E<n>' for a number glibc has no name for.
Napi::Value ErrnoNameJs(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), ErrnoName(ArgInt(info[0])));
}

}  // namespace

void InitErrors(Napi::Env env, Napi::Object exports) {
  exports.Set("errnoName", Napi::Function::New(env, ErrnoNameJs));
}

}  // namespace ckpt
