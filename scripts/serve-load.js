#!/usr/bin/env node
/**
 * Latency under load for `router-tuning serve`: N clients send completions back to back for
 * S seconds; prints p50/p90/p99 latency, requests/s, generated tokens/s, 429s, errors,
 * /health latency during the load, and the server's peak RSS.
 *
 *   npm run build:ts && node scripts/serve-load.js [--clients 8] [--seconds 20]
 *       [--max-tokens 32] [--stream] [--routing off|on] [--json]
 *       [--url http://127.0.0.1:8080 | server flags: --concurrency N --queue N --routers FILE --threads N]
 *
 * Without --url it starts `dist/lib/cli/main.js serve --port 0` (the embedded model) as a
 * child process and stops it afterwards. A client that gets 429 waits 100 ms and retries
 * (it is counted, not timed).
 */
'use strict';
const { spawn } = require('child_process');
const fs = require('fs');
const path = require('path');

function parseArgs(argv) {
  const o = { clients: 8, seconds: 20, maxTokens: 32, stream: false, routing: undefined, json: false, url: undefined, server: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = () => argv[++i];
    if (a === '--clients') o.clients = Number(v());
    else if (a === '--seconds') o.seconds = Number(v());
    else if (a === '--max-tokens') o.maxTokens = Number(v());
    else if (a === '--stream') o.stream = true;
    else if (a === '--routing') o.routing = v();
    else if (a === '--json') o.json = true;
    else if (a === '--url') o.url = v();
    else if (['--concurrency', '--queue', '--routers', '--threads', '--model', '--max-tokens-limit'].includes(a)) o.server.push(a === '--max-tokens-limit' ? '--max-tokens' : a, v());
    else throw new Error(`unknown option ${a}`);
  }
  return o;
}

const PROMPTS = [
  'Call me Ishmael.',
  'It was the best of times, it was the worst of times,',
  'The President spoke to the Congress about',
  'The sea was calm that morning, and the',
  'In the year of our Lord',
  'She opened the letter and read',
  'The captain stood on the deck',
  'Mr. Speaker, members of the Congress,',
];

function pct(sorted, p) {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

function rssOf(pid) {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

async function startServer(flags) {
  const main = path.join(__dirname, '..', 'dist', 'lib', 'cli', 'main.js');
  if (!fs.existsSync(main)) throw new Error(`${main} missing: run npm run build:ts first`);
  const child = spawn(process.execPath, [main, 'serve', '--port', '0', '--json', ...flags], { stdio: ['ignore', 'pipe', 'inherit'] });
  const line = await new Promise((resolve, reject) => {
    let buf = '';
    child.stdout.on('data', (d) => {
      buf += d;
      if (buf.includes('\n')) resolve(buf.split('\n')[0]);
    });
    child.on('exit', (code) => reject(new Error(`serve exited with ${code}`)));
  });
  return { child, url: JSON.parse(line).url };
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  let server;
  let url = o.url;
  if (!url) {
    server = await startServer(o.server);
    url = server.url;
  }
  const latencies = [];
  const ttft = [];
  const health = [];
  let tokens = 0, rejected = 0, errors = 0, peakRss = 0;
  const t0 = Date.now();
  const deadline = t0 + o.seconds * 1000;
  let seq = 0;

  async function client(c) {
    while (Date.now() < deadline) {
      const body = { prompt: PROMPTS[(c + seq++) % PROMPTS.length], max_tokens: o.maxTokens, temperature: 0.8, seed: seq, ignore_eos: true, stream: o.stream };
      if (o.routing) body.routing = o.routing;
      const start = performance.now();
      try {
        const res = await fetch(url + '/v1/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
        if (res.status === 429) {
          rejected++;
          await res.text();
          await new Promise((r) => setTimeout(r, 100));
          continue;
        }
        if (res.status !== 200) {
          errors++;
          await res.text();
          continue;
        }
        if (o.stream) {
          const reader = res.body.getReader();
          let first = true, text = '';
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            if (first) {
              ttft.push(performance.now() - start);
              first = false;
            }
            text += Buffer.from(value).toString();
          }
          const m = /"completion_tokens":(\d+)/.exec(text);
          tokens += m ? Number(m[1]) : 0;
        } else {
          const j = await res.json();
          tokens += j.usage.completion_tokens;
        }
        latencies.push(performance.now() - start);
      } catch {
        errors++;
      }
    }
  }

  const probe = (async () => {
    while (Date.now() < deadline) {
      const s = performance.now();
      try {
        await (await fetch(url + '/health')).json();
        health.push(performance.now() - s);
      } catch {
        errors++;
      }
      if (server) peakRss = Math.max(peakRss, rssOf(server.child.pid));
      await new Promise((r) => setTimeout(r, 200));
    }
  })();
  await Promise.all([...Array.from({ length: o.clients }, (_, c) => client(c)), probe]);
  const seconds = (Date.now() - t0) / 1000;
  latencies.sort((a, b) => a - b);
  ttft.sort((a, b) => a - b);
  health.sort((a, b) => a - b);
  let metrics = '';
  try {
    metrics = await (await fetch(url + '/metrics')).text();
  } catch {
    /* server gone */
  }
  const skip = /router_tuning_skip_ratio ([0-9.e+-]+)/.exec(metrics);
  const loop = (q) => {
    const m = new RegExp(`router_tuning_event_loop_delay_seconds\\{quantile="${q}"\\} ([0-9.e+-]+)`).exec(metrics);
    return m ? Math.round(Number(m[1]) * 1e4) / 10 : undefined;
  };
  const r = {
    clients: o.clients,
    seconds: Math.round(seconds * 10) / 10,
    maxTokens: o.maxTokens,
    stream: o.stream,
    server: o.url ? o.url : o.server.join(' ') || 'defaults',
    requests: latencies.length,
    requestsPerSecond: Math.round((latencies.length / seconds) * 100) / 100,
    tokensPerSecond: Math.round((tokens / seconds) * 10) / 10,
    latencyMs: { p50: Math.round(pct(latencies, 50)), p90: Math.round(pct(latencies, 90)), p99: Math.round(pct(latencies, 99)), max: Math.round(latencies[latencies.length - 1] ?? NaN) },
    ttftMs: o.stream ? { p50: Math.round(pct(ttft, 50)), p99: Math.round(pct(ttft, 99)) } : undefined,
    serverEventLoopDelayMs: { p50: loop('0.5'), p99: loop('0.99'), max: loop('1') },
    healthMs: { p50: Math.round(pct(health, 50) * 10) / 10, p99: Math.round(pct(health, 99) * 10) / 10, probes: health.length },
    rejected429: rejected,
    errors,
    peakRssBytes: server ? peakRss : undefined,
    lastSkipRatio: skip ? Number(skip[1]) : undefined,
  };
  if (server) {
    server.child.kill('SIGTERM');
    await new Promise((res) => server.child.once('exit', res));
  }
  if (o.json) process.stdout.write(JSON.stringify(r) + '\n');
  else {
    process.stdout.write(
      [
        `${r.clients} clients × ${r.seconds} s, max_tokens ${r.maxTokens}${r.stream ? ', streaming' : ''}, server: ${r.server}`,
        `requests ${r.requests} (${r.requestsPerSecond}/s), generated ${r.tokensPerSecond} tok/s, 429s ${r.rejected429}, errors ${r.errors}`,
        `latency p50 ${r.latencyMs.p50} ms, p90 ${r.latencyMs.p90} ms, p99 ${r.latencyMs.p99} ms, max ${r.latencyMs.max} ms`,
        r.ttftMs ? `time to first token p50 ${r.ttftMs.p50} ms, p99 ${r.ttftMs.p99} ms` : '',
        `/health during load: p50 ${r.healthMs.p50} ms, p99 ${r.healthMs.p99} ms (${r.healthMs.probes} probes); server event-loop delay p50 ${r.serverEventLoopDelayMs.p50} ms, p99 ${r.serverEventLoopDelayMs.p99} ms, max ${r.serverEventLoopDelayMs.max} ms`,
        r.peakRssBytes !== undefined ? `server peak RSS ${(r.peakRssBytes / 2 ** 20).toFixed(1)} MiB` : '',
      ]
        .filter(Boolean)
        .join('\n') + '\n',
    );
  }
}

main().catch((e) => {
  process.stderr.write(`serve-load: ${e.stack || e}\n`);
  process.exitCode = 1;
});
