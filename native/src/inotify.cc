// inotify, and the file handles that name what an inotify watch watches: what Node does not
// expose and @ckpt/plugin-event-fds needs (was extra.cc).
//   openByHandleAt  resolves an inotify watch (its f_handle from fdinfo) to an open O_PATH fd
//                   (needs CAP_DAC_READ_SEARCH);
//   inotifyInit / inotifyAddWatch / inotifyRmWatch  rebuild an inotify instance in the restorer;
//   fanotifyInit / fanotifyMark  rebuild a fanotify group.
#include "common.h"

#include <fcntl.h>
#include <sys/fanotify.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

namespace ckpt {
namespace {

// openByHandleAt(mountFd, handleType, handle: Buffer, flags) -> fd
Napi::Value OpenByHandleAt(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int mountFd = ArgInt(info[0]);
  int type = ArgInt(info[1]);
  Napi::Buffer<uint8_t> bytes = info[2].As<Napi::Buffer<uint8_t>>();
  int flags = ArgInt(info[3]);
  auto* fh = static_cast<struct file_handle*>(malloc(sizeof(struct file_handle) + bytes.Length()));
  if (!fh) {
    ThrowErrno(env, ENOMEM, "open_by_handle_at");
    return env.Undefined();
  }
  fh->handle_bytes = static_cast<unsigned int>(bytes.Length());
  fh->handle_type = type;
  memcpy(fh->f_handle, bytes.Data(), bytes.Length());
  int fd = open_by_handle_at(mountFd, fh, flags | O_CLOEXEC);
  int err = errno;
  free(fh);
  if (fd < 0) {
    ThrowErrno(env, err, "open_by_handle_at");
    return env.Undefined();
  }
  return Napi::Number::New(env, fd);
}

// inotifyInit(flags) -> fd (always close-on-exec in the restorer)
Napi::Value InotifyInit(const Napi::CallbackInfo& info) {
  int fd = inotify_init1(ArgInt(info[0]) | IN_CLOEXEC);
  if (fd < 0) {
    ThrowErrno(info.Env(), errno, "inotify_init1");
    return info.Env().Undefined();
  }
  return Napi::Number::New(info.Env(), fd);
}

// inotifyAddWatch(fd, path, mask) -> wd
Napi::Value InotifyAddWatch(const Napi::CallbackInfo& info) {
  std::string path = info[1].As<Napi::String>().Utf8Value();
  int wd = inotify_add_watch(ArgInt(info[0]), path.c_str(), static_cast<uint32_t>(ArgU64(info[2])));
  if (wd < 0) {
    ThrowErrno(info.Env(), errno, "inotify_add_watch");
    return info.Env().Undefined();
  }
  return Napi::Number::New(info.Env(), wd);
}

// inotifyRmWatch(fd, wd)
Napi::Value InotifyRmWatch(const Napi::CallbackInfo& info) {
  if (inotify_rm_watch(ArgInt(info[0]), ArgInt(info[1])) < 0) ThrowErrno(info.Env(), errno, "inotify_rm_watch");
  return info.Env().Undefined();
}

// fanotifyInit(flags, eventFlags) -> fd. The group keeps the flags as given (fdinfo shows
// FAN_CLOEXEC too); the restorer's fd is made close-on-exec apart.
Napi::Value FanotifyInit(const Napi::CallbackInfo& info) {
  int fd = fanotify_init(static_cast<unsigned>(ArgU64(info[0])), static_cast<unsigned>(ArgU64(info[1])));
  if (fd < 0) {
    ThrowErrno(info.Env(), errno, "fanotify_init");
    return info.Env().Undefined();
  }
  fcntl(fd, F_SETFD, FD_CLOEXEC);
  return Napi::Number::New(info.Env(), fd);
}

// fanotifyMark(fd, flags, mask, path): a mark on the object at path (not followed if a symlink).
Napi::Value FanotifyMark(const Napi::CallbackInfo& info) {
  std::string path = info[3].As<Napi::String>().Utf8Value();
  if (fanotify_mark(ArgInt(info[0]), static_cast<unsigned>(ArgU64(info[1])), ArgU64(info[2]), AT_FDCWD, path.c_str()) < 0) {
    ThrowErrno(info.Env(), errno, "fanotify_mark");
  }
  return info.Env().Undefined();
}

}  // namespace

void InitInotify(Napi::Env env, Napi::Object exports) {
  exports.Set("fanotifyInit", Napi::Function::New(env, FanotifyInit));
  exports.Set("fanotifyMark", Napi::Function::New(env, FanotifyMark));
  exports.Set("openByHandleAt", Napi::Function::New(env, OpenByHandleAt));
  exports.Set("inotifyInit", Napi::Function::New(env, InotifyInit));
  exports.Set("inotifyAddWatch", Napi::Function::New(env, InotifyAddWatch));
  exports.Set("inotifyRmWatch", Napi::Function::New(env, InotifyRmWatch));
}

}  // namespace ckpt
