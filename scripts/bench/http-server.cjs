// HTTP workload for scripts/bench.mjs (a real program: node serving HTTP/1.1 with keep-alive).
//   node http-server.cjs
// Listens on 127.0.0.1 (a free port), prints "listening PORT", and answers:
//   GET /hit    {"pid", "conn", "hits"}: conn numbers the server's connections (1, 2, ...), so a
//               client can tell that its request came in on the connection it opened first;
//               hits counts every /hit since the start
//   GET /stall  {"maxstallUs"}: the longest gap (beyond the 1 ms asked for) between two runs of a
//               1 ms interval timer since the last /stall: how long the event loop stood still
// Idle connections are never closed by the server (no keep-alive, header or request timeouts),
// so a connection can wait across a checkpoint of any length.
'use strict';
const http = require('node:http');
const { performance } = require('node:perf_hooks');

let hits = 0;
let conns = 0;
let maxGap = 0;
let last = performance.now();
setInterval(() => {
  const t = performance.now();
  const gap = t - last - 1;
  if (gap > maxGap) maxGap = gap;
  last = t;
}, 1);

const server = http.createServer((req, res) => {
  let body;
  if (req.url === '/hit') {
    hits++;
    body = JSON.stringify({ pid: process.pid, conn: req.socket.benchConn, hits });
  } else if (req.url === '/stall') {
    body = JSON.stringify({ maxstallUs: Math.round(maxGap * 1000) });
    maxGap = 0;
  } else {
    res.writeHead(404, { 'content-length': 0 });
    res.end();
    return;
  }
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
});
server.on('connection', (s) => {
  s.benchConn = ++conns;
});
server.keepAliveTimeout = 0;
server.headersTimeout = 0;
server.requestTimeout = 0;
server.timeout = 0;
server.listen(0, '127.0.0.1', () => {
  console.log(`listening ${server.address().port}`);
});
