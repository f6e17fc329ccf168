// SysV IPC: snapshot every shared memory segment, message queue (messages read with MSG_COPY,
// not consumed) and semaphore set of an IPC namespace, and recreate them with their ids, keys,
// modes, owners and contents. The work runs on a short-lived thread that joins the target's
// IPC namespace (setns affects only the calling thread), so the restorer itself never moves.
#include "common.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <thread>
#include <vector>

#ifndef SHM_STAT_ANY
#define SHM_STAT_ANY 15
#endif
#ifndef MSG_STAT_ANY
#define MSG_STAT_ANY 13
#endif
#ifndef SEM_STAT_ANY
#define SEM_STAT_ANY 20
#endif
#ifndef MSG_COPY
#define MSG_COPY 040000
#endif

namespace ckpt {
namespace {

union semun {
  int val;
  struct semid_ds* buf;
  unsigned short* array;
  struct seminfo* __buf;
};

struct Perm {
  int key, uid, gid, cuid, cgid, mode;
};

struct Msg {
  long type;
  std::vector<uint8_t> data;
};

struct Obj {
  std::string kind;  // shm | msg | sem
  int id = -1;
  Perm perm{};
  int64_t ctime = 0;    // last change (creation, IPC_SET): with id, key and creator, its identity
  uint64_t nattch = 0;  // shm: attachments now
  // shm
  uint64_t size = 0;
  bool destroyed = false;
  std::vector<uint8_t> bytes;
  // msg
  uint64_t qbytes = 0;
  std::vector<Msg> msgs;
  // sem
  std::vector<unsigned short> sems;
};

struct Result {
  int err = 0;
  std::string where;
  std::vector<Obj> objs;
  std::vector<int> ids;  // restore: the ids obtained
};

bool JoinNs(long pid, Result& r) {
  if (pid <= 0) return true;
  int fd = open(("/proc/" + std::to_string(pid) + "/ns/ipc").c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || setns(fd, CLONE_NEWIPC) < 0) {
    r.err = errno;
    r.where = "setns(ipc)";
    if (fd >= 0) close(fd);
    return false;
  }
  close(fd);
  return true;
}

template <typename T>
Perm PermOf(const T& p) {
  return Perm{static_cast<int>(p.__key), static_cast<int>(p.uid), static_cast<int>(p.gid), static_cast<int>(p.cuid),
              static_cast<int>(p.cgid), static_cast<int>(p.mode)};
}

void Snapshot(long pid, bool contents, Result& r) {
  if (!JoinNs(pid, r)) return;
  struct shm_info si;
  int maxShm = shmctl(0, SHM_INFO, reinterpret_cast<struct shmid_ds*>(&si));
  for (int idx = 0; idx <= maxShm; idx++) {
    struct shmid_ds ds;
    int id = shmctl(idx, SHM_STAT_ANY, &ds);
    if (id < 0) continue;
    Obj o;
    o.kind = "shm";
    o.id = id;
    o.perm = PermOf(ds.shm_perm);
    o.size = ds.shm_segsz;
    o.ctime = ds.shm_ctime;
    o.nattch = ds.shm_nattch;
    o.destroyed = (ds.shm_perm.mode & SHM_DEST) != 0;
    if (contents) {
      void* p = shmat(id, nullptr, SHM_RDONLY);
      if (p == reinterpret_cast<void*>(-1)) {
        r.err = errno;
        r.where = "shmat(" + std::to_string(id) + ")";
        return;
      }
      o.bytes.assign(static_cast<uint8_t*>(p), static_cast<uint8_t*>(p) + o.size);
      shmdt(p);
    }
    r.objs.push_back(std::move(o));
  }
  struct msginfo mi;
  int maxMsg = msgctl(0, MSG_INFO, reinterpret_cast<struct msqid_ds*>(&mi));
  for (int idx = 0; idx <= maxMsg; idx++) {
    struct msqid_ds ds;
    int id = msgctl(idx, MSG_STAT_ANY, &ds);
    if (id < 0) continue;
    Obj o;
    o.kind = "msg";
    o.id = id;
    o.perm = PermOf(ds.msg_perm);
    o.qbytes = ds.msg_qbytes;
    o.ctime = ds.msg_ctime;
    if (contents) {
      std::vector<uint8_t> buf(sizeof(long) + 65536);
      for (unsigned long k = 0; k < ds.msg_qnum; k++) {
        ssize_t n = msgrcv(id, buf.data(), 65536, static_cast<long>(k), IPC_NOWAIT | MSG_COPY | MSG_NOERROR);
        if (n < 0) {
          r.err = errno;
          r.where = "msgrcv(MSG_COPY, " + std::to_string(id) + ")";
          return;
        }
        Msg m;
        memcpy(&m.type, buf.data(), sizeof(long));
        m.data.assign(buf.data() + sizeof(long), buf.data() + sizeof(long) + n);
        o.msgs.push_back(std::move(m));
      }
    }
    r.objs.push_back(std::move(o));
  }
  struct seminfo sinfo;
  semun arg;
  arg.__buf = &sinfo;
  int maxSem = semctl(0, 0, SEM_INFO, arg);
  for (int idx = 0; idx <= maxSem; idx++) {
    struct semid_ds ds;
    arg.buf = &ds;
    int id = semctl(idx, 0, SEM_STAT_ANY, arg);
    if (id < 0) continue;
    Obj o;
    o.kind = "sem";
    o.id = id;
    o.perm = PermOf(ds.sem_perm);
    o.ctime = ds.sem_ctime;
    o.sems.resize(ds.sem_nsems);
    arg.array = o.sems.data();
    if (semctl(id, 0, GETALL, arg) < 0) {
      r.err = errno;
      r.where = "semctl(GETALL, " + std::to_string(id) + ")";
      return;
    }
    r.objs.push_back(std::move(o));
  }
}

bool WriteNextId(const char* name, int id) {
  std::string path = std::string("/proc/sys/kernel/") + name;
  int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  std::string v = std::to_string(id);
  bool ok = write(fd, v.data(), v.size()) == static_cast<ssize_t>(v.size());
  close(fd);
  return ok;
}

template <typename DS>
void SetPerm(DS& ds, const Perm& p) {
  ds.uid = p.uid;
  ds.gid = p.gid;
  ds.mode = p.mode & 0777;
}

// Creates each object (with the same id unless remap), owner, mode, contents.
void Create(long pid, std::vector<Obj>& objs, bool remap, Result& r) {
  if (!JoinNs(pid, r)) return;
  for (auto& o : objs) {
    int flags = IPC_CREAT | IPC_EXCL | (o.perm.mode & 0777);
    key_t key = static_cast<key_t>(o.perm.key);
    int id = -1;
    const char* nextId = o.kind == "shm" ? "shm_next_id" : o.kind == "msg" ? "msg_next_id" : "sem_next_id";
    if (!remap && !WriteNextId(nextId, o.id)) {
      r.err = errno;
      r.where = std::string("write /proc/sys/kernel/") + nextId;
      return;
    }
    if (o.kind == "shm") id = shmget(key, o.size, flags);
    else if (o.kind == "msg") id = msgget(key, flags);
    else id = semget(key, static_cast<int>(o.sems.size()), flags);
    if (!remap) WriteNextId(nextId, -1);
    if (id < 0) {
      r.err = errno;
      r.where = o.kind + "get(key " + std::to_string(o.perm.key) + ")";
      return;
    }
    r.ids.push_back(id);
    if (!remap && id != o.id) {
      r.err = EEXIST;
      r.where = o.kind + " id " + std::to_string(o.id) + " (got " + std::to_string(id) + ")";
      return;
    }
    if (o.kind == "shm") {
      void* p = shmat(id, nullptr, 0);
      if (p == reinterpret_cast<void*>(-1)) {
        r.err = errno;
        r.where = "shmat";
        return;
      }
      memcpy(p, o.bytes.data(), std::min<size_t>(o.bytes.size(), o.size));
      shmdt(p);
      struct shmid_ds ds;
      shmctl(id, IPC_STAT, &ds);
      SetPerm(ds.shm_perm, o.perm);
      shmctl(id, IPC_SET, &ds);
    } else if (o.kind == "msg") {
      struct msqid_ds ds;
      msgctl(id, IPC_STAT, &ds);
      uint64_t total = 0;
      for (auto& m : o.msgs) total += m.data.size();
      // Room for every queued message first (lowering the limit back is always allowed).
      if (ds.msg_qbytes < total) {
        ds.msg_qbytes = total;
        msgctl(id, IPC_SET, &ds);
      }
      std::vector<uint8_t> buf;
      for (auto& m : o.msgs) {
        buf.resize(sizeof(long) + m.data.size());
        memcpy(buf.data(), &m.type, sizeof(long));
        memcpy(buf.data() + sizeof(long), m.data.data(), m.data.size());
        if (msgsnd(id, buf.data(), m.data.size(), IPC_NOWAIT) < 0) {
          r.err = errno;
          r.where = "msgsnd";
          return;
        }
      }
      msgctl(id, IPC_STAT, &ds);
      SetPerm(ds.msg_perm, o.perm);
      ds.msg_qbytes = o.qbytes;
      if (msgctl(id, IPC_SET, &ds) < 0) {
        ds.msg_qbytes = std::max<uint64_t>(total, 1);  // raising above msgmnb needs CAP_SYS_RESOURCE
        msgctl(id, IPC_SET, &ds);
      }
    } else {
      semun arg;
      arg.array = o.sems.data();
      if (!o.sems.empty() && semctl(id, 0, SETALL, arg) < 0) {
        r.err = errno;
        r.where = "semctl(SETALL)";
        return;
      }
      struct semid_ds ds;
      arg.buf = &ds;
      semctl(id, 0, IPC_STAT, arg);
      SetPerm(ds.sem_perm, o.perm);
      semctl(id, 0, IPC_SET, arg);
    }
  }
}

void Remove(long pid, const std::vector<std::pair<std::string, int>>& which, Result& r) {
  if (!JoinNs(pid, r)) return;
  for (auto& [kind, id] : which) {
    int rc = kind == "shm" ? shmctl(id, IPC_RMID, nullptr) : kind == "msg" ? msgctl(id, IPC_RMID, nullptr) : semctl(id, 0, IPC_RMID);
    if (rc < 0 && !r.err) {
      r.err = errno;
      r.where = kind + "ctl(IPC_RMID, " + std::to_string(id) + ")";
    }
  }
}

Napi::Value ToJs(Napi::Env env, const Obj& o) {
  Napi::Object j = Napi::Object::New(env);
  j.Set("kind", o.kind);
  j.Set("id", o.id);
  j.Set("key", o.perm.key);
  j.Set("uid", o.perm.uid);
  j.Set("gid", o.perm.gid);
  j.Set("cuid", o.perm.cuid);
  j.Set("cgid", o.perm.cgid);
  j.Set("mode", o.perm.mode);
  j.Set("ctime", Napi::Number::New(env, static_cast<double>(o.ctime)));
  if (o.kind == "shm") {
    j.Set("nattch", Napi::Number::New(env, static_cast<double>(o.nattch)));
    j.Set("size", Napi::Number::New(env, static_cast<double>(o.size)));
    j.Set("destroyed", o.destroyed);
    j.Set("bytes", Napi::Buffer<uint8_t>::Copy(env, o.bytes.data(), o.bytes.size()));
  } else if (o.kind == "msg") {
    j.Set("qbytes", Napi::Number::New(env, static_cast<double>(o.qbytes)));
    Napi::Array a = Napi::Array::New(env, o.msgs.size());
    for (size_t k = 0; k < o.msgs.size(); k++) {
      Napi::Object m = Napi::Object::New(env);
      m.Set("type", Napi::Number::New(env, static_cast<double>(o.msgs[k].type)));
      m.Set("data", Napi::Buffer<uint8_t>::Copy(env, o.msgs[k].data.data(), o.msgs[k].data.size()));
      a.Set(k, m);
    }
    j.Set("messages", a);
  } else {
    Napi::Array a = Napi::Array::New(env, o.sems.size());
    for (size_t k = 0; k < o.sems.size(); k++) a.Set(k, o.sems[k]);
    j.Set("values", a);
  }
  return j;
}

Obj FromJs(Napi::Object j) {
  Obj o;
  o.kind = j.Get("kind").As<Napi::String>().Utf8Value();
  o.id = j.Get("id").As<Napi::Number>().Int32Value();
  o.perm = Perm{j.Get("key").As<Napi::Number>().Int32Value(), j.Get("uid").As<Napi::Number>().Int32Value(),
                j.Get("gid").As<Napi::Number>().Int32Value(), 0, 0, j.Get("mode").As<Napi::Number>().Int32Value()};
  if (o.kind == "shm") {
    o.size = static_cast<uint64_t>(j.Get("size").As<Napi::Number>().DoubleValue());
    auto b = j.Get("bytes").As<Napi::Buffer<uint8_t>>();
    o.bytes.assign(b.Data(), b.Data() + b.Length());
  } else if (o.kind == "msg") {
    o.qbytes = static_cast<uint64_t>(j.Get("qbytes").As<Napi::Number>().DoubleValue());
    Napi::Array a = j.Get("messages").As<Napi::Array>();
    for (uint32_t k = 0; k < a.Length(); k++) {
      Napi::Object m = a.Get(k).As<Napi::Object>();
      auto b = m.Get("data").As<Napi::Buffer<uint8_t>>();
      o.msgs.push_back(Msg{static_cast<long>(m.Get("type").As<Napi::Number>().Int64Value()), std::vector<uint8_t>(b.Data(), b.Data() + b.Length())});
    }
  } else {
    Napi::Array a = j.Get("values").As<Napi::Array>();
    for (uint32_t k = 0; k < a.Length(); k++) o.sems.push_back(static_cast<unsigned short>(a.Get(k).As<Napi::Number>().Uint32Value()));
  }
  return o;
}

bool Fail(Napi::Env env, const Result& r) {
  if (!r.err) return false;
  ThrowErrno(env, r.err, r.where.c_str());
  return true;
}

// ipcSnapshot(pid | 0, contents) -> objects of pid's IPC namespace (0: ours).
Napi::Value IpcSnapshot(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  long pid = ArgInt(info[0]);
  bool contents = info[1].ToBoolean();
  Result r;
  std::thread t([&] { Snapshot(pid, contents, r); });
  t.join();
  if (Fail(env, r)) return env.Undefined();
  Napi::Array out = Napi::Array::New(env, r.objs.size());
  for (size_t k = 0; k < r.objs.size(); k++) out.Set(k, ToJs(env, r.objs[k]));
  return out;
}

// ipcCreate(pid | 0, objects, remap) -> ids obtained (in order); throws on the first failure,
// with the ids created so far in err.created.
Napi::Value IpcCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  long pid = ArgInt(info[0]);
  Napi::Array a = info[1].As<Napi::Array>();
  bool remap = info[2].ToBoolean();
  std::vector<Obj> objs;
  for (uint32_t k = 0; k < a.Length(); k++) objs.push_back(FromJs(a.Get(k).As<Napi::Object>()));
  Result r;
  std::thread t([&] { Create(pid, objs, remap, r); });
  t.join();
  Napi::Array ids = Napi::Array::New(env, r.ids.size());
  for (size_t k = 0; k < r.ids.size(); k++) ids.Set(k, r.ids[k]);
  if (r.err) {
    Napi::Error e = ErrnoError(env, r.err, r.where.c_str());
    e.Set("created", ids);
    e.ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return ids;
}

// ipcRemove(pid | 0, [[kind, id], ...])
Napi::Value IpcRemove(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  long pid = ArgInt(info[0]);
  Napi::Array a = info[1].As<Napi::Array>();
  std::vector<std::pair<std::string, int>> which;
  for (uint32_t k = 0; k < a.Length(); k++) {
    Napi::Array e = a.Get(k).As<Napi::Array>();
    which.emplace_back(e.Get(0u).As<Napi::String>().Utf8Value(), e.Get(1u).As<Napi::Number>().Int32Value());
  }
  Result r;
  std::thread t([&] { Remove(pid, which, r); });
  t.join();
  Fail(env, r);
  return env.Undefined();
}

}  // namespace

void InitIpc(Napi::Env env, Napi::Object exports) {
  exports.Set("ipcSnapshot", Napi::Function::New(env, IpcSnapshot));
  exports.Set("ipcCreate", Napi::Function::New(env, IpcCreate));
  exports.Set("ipcRemove", Napi::Function::New(env, IpcRemove));
}

}  // namespace ckpt
