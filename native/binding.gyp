{
  "targets": [
    {
      "target_name": "ckpt_native",
      "sources": [
        "src/addon.cc",
        "src/errors.cc",
        "src/ptrace.cc",
        "src/memory.cc",
        "src/spawn.cc",
        "src/fd.cc",
        "src/ipc.cc",
        "src/sock.cc",
        "src/unix.cc",
        "src/inet.cc",
        "src/packet.cc",
        "src/netif.cc",
        "src/inotify.cc",
        "src/hash.cc",
        "src/sign.cc",
        "src/blake3.cc",
        "src/zstd.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags_cc": ["-std=c++17", "-O2", "-funroll-loops", "-Wall", "-Wno-missing-field-initializers"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "libraries": ["-ldl"]
    }
  ]
}
