// A typical managed heap for scripts/bench.mjs (zstd's ratio and speed on it): node with about
// MIB MiB of small objects (ids, names, tags, numbers, dates), the kind a service holds.
//   node heap.cjs MIB
// Prints "ready" once built, then idles.
const mib = Number(process.argv[2] ?? 256);
const words = ['alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot', 'golf', 'hotel', 'india', 'juliet'];
const heap = [];
let i = 0;
while (process.memoryUsage().heapUsed < mib * 1024 * 1024) {
  for (let k = 0; k < 10_000; k++, i++) {
    heap.push({
      id: i,
      name: `user-${i}-${words[i % words.length]}`,
      email: `${words[(i * 7) % words.length]}.${i}@example.com`,
      tags: [words[i % 3], words[(i >> 3) % words.length]],
      score: Math.round(Math.random() * 1e6) / 100,
      created: new Date(1.7e12 + i * 1000).toISOString(),
    });
  }
}
console.log('ready');
setInterval(() => heap.length, 1000);
