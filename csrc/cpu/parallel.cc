// Thread pool: persistent workers woken per parallel_for; the calling thread works too.
//
// Decode runs ~150 parallel regions per token, ~10-40 µs apart (the JS between ops), each
// only 50-500 µs long. Waking a worker sleeping on a condition variable costs a futex
// round trip (10-50 µs on a loaded VM) per region. So an idle worker first spins on the
// job word for up to kSpinMicros, and only then sleeps: back-to-back regions never
// touch the kernel. Spinning is only good while the cores are ours: on an oversubscribed
// machine a spinning thread takes CPU from this process's own main thread (measured:
// decode 2× slower at a load of 10 on 2 cores). So every spin compares the thread's CPU
// time with the wall time it took; a spin that was descheduled for most of it turns
// spinning off (sleep at once) for kBackoffMillis. And the caller checks the CPU
// pressure (/proc/pressure/cpu "some avg10", else the load average) every 200 ms: on a
// machine where other processes wait for a CPU, workers do not spin at all (a spinning
// thread also loses the scheduler's wake-up preference, and so joins regions late).
//
// Chunks are claimed from one 64-bit word (generation << 32 | next chunk) by CAS, and
// the caller returns as soon as every chunk is *done*, not when every worker has checked
// in: a worker that is descheduled (a busy shared machine) never stalls a region, the
// caller just takes its chunks. A late worker's CAS fails on the generation, so it can
// never run a finished job's function.
#include "parallel.h"

#include <time.h>

#include <cstdio>
#include <cstring>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#include "rt/common.h"

extern "C" void openblas_set_num_threads(int num_threads);

namespace rt {
namespace {

thread_local int t_index = 0;
thread_local bool t_in_parallel = false;

constexpr int64_t kSpinMicros = 200;    // idle worker: spin this long before sleeping
constexpr int64_t kBackoffMillis = 50;  // no spinning this long after a descheduled spin

std::atomic<int64_t> g_no_spin_until{0};  // steady_clock ns

inline int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

inline int64_t thread_cpu_ns() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

std::atomic<bool> g_spin_allowed{true};
std::atomic<int64_t> g_next_pressure_check{0};

// Reads the machine's CPU pressure (PSI some avg10, %) or, without PSI, the 1-minute load
// average against the core count; spinning is allowed on a machine that is not contended.
bool machine_is_quiet() {
  char buf[256];
  if (FILE* f = std::fopen("/proc/pressure/cpu", "r")) {
    size_t n = std::fread(buf, 1, sizeof(buf) - 1, f);
    std::fclose(f);
    buf[n] = 0;
    if (const char* p = std::strstr(buf, "avg10=")) return std::atof(p + 6) < 20.0;
  }
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    double load = 0;
    int ok = std::fscanf(f, "%lf", &load);
    std::fclose(f);
    unsigned hw = std::thread::hardware_concurrency();
    if (ok == 1 && hw) return load < hw + 0.5;
  }
  return true;
}

void update_spin_policy(int64_t now) {
  int64_t next = g_next_pressure_check.load(std::memory_order_relaxed);
  if (now < next || !g_next_pressure_check.compare_exchange_strong(next, now + 200000000)) return;
  g_spin_allowed.store(machine_is_quiet(), std::memory_order_relaxed);
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Spins (pause) until pred() or `micros` pass; true when pred() came true. Skipped while
// spinning is backed off; a spin that got less than half its wall time on a CPU (the
// machine is oversubscribed) starts a back-off.
template <typename Pred>
bool spin_until(Pred pred, int64_t micros) {
  const int64_t t0 = now_ns();
  if (!g_spin_allowed.load(std::memory_order_relaxed) || t0 < g_no_spin_until.load(std::memory_order_relaxed))
    return pred();
  const int64_t c0 = thread_cpu_ns();
  bool ok = false;
  for (int i = 0;; ++i) {
    if (pred()) {
      ok = true;
      break;
    }
    cpu_relax();
    if ((i & 31) == 31 && now_ns() - t0 > micros * 1000) {
      ok = pred();
      break;
    }
  }
  const int64_t wall = now_ns() - t0;
  if (wall > 20000 && 2 * (thread_cpu_ns() - c0) < wall) g_no_spin_until.store(t0 + wall + kBackoffMillis * 1000000);
  return ok;
}

using ChunkFn = std::function<void(int64_t)>;

class Pool {
 public:
  explicit Pool(int n) { resize(n); }
  ~Pool() { stop(); }

  int size() const { return n_threads_; }

  void resize(int n) {
    if (n < 1) n = 1;
    std::lock_guard<std::mutex> run_lock(run_mutex_);
    stop();
    n_threads_ = n;
    stopping_ = false;
    for (int i = 1; i < n; ++i) workers_.emplace_back([this, i] { worker(i); });
  }

  void run(int64_t n_chunks, const ChunkFn& chunk_fn) {
    std::lock_guard<std::mutex> run_lock(run_mutex_);  // one parallel region at a time
    update_spin_policy(now_ns());
    const uint64_t gen = (state_.load() >> 32) + 1;
    job_.store(&chunk_fn, std::memory_order_relaxed);
    n_chunks_.store(n_chunks, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    state_.store(gen << 32);  // publishes the job (seq_cst: pairs with the sleeping_ check)
    if (sleeping_.load() > 0) {
      { std::lock_guard<std::mutex> lock(mutex_); }  // a worker between its check and its wait gets the notify
      cv_.notify_all();
    }
    work(0, gen);
    auto finished = [&] { return done_.load(std::memory_order_acquire) >= n_chunks; };
    if (!spin_until(finished, kSpinMicros)) {
      std::unique_lock<std::mutex> lock(mutex_);
      done_cv_.wait(lock, finished);
    }
  }

 private:
  // Claims and runs chunks of generation gen until none is left (or a newer job is up).
  void work(int index, uint64_t gen) {
    t_index = index;
    t_in_parallel = true;
    for (;;) {
      uint64_t s = state_.load(std::memory_order_acquire);
      if ((s >> 32) != gen) break;
      const ChunkFn* fn = job_.load(std::memory_order_relaxed);
      const int64_t n = n_chunks_.load(std::memory_order_relaxed);
      const int64_t chunk = static_cast<int64_t>(s & 0xffffffffu);
      if (chunk >= n) break;
      // Success means the generation is still gen with chunk < n: the job is not finished,
      // so fn and n are gen's (a later job is only published after all of gen's chunks are done).
      if (!state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel)) continue;
      (*fn)(chunk);
      if (done_.fetch_add(1, std::memory_order_acq_rel) + 1 == n) {
        std::lock_guard<std::mutex> lock(mutex_);  // pairs with the caller's predicate check
        done_cv_.notify_one();
      }
    }
    t_in_parallel = false;
  }

  void worker(int index) {
    uint64_t seen = state_.load() >> 32;
    for (;;) {
      auto ready = [&] { return stopping_.load() || (state_.load(std::memory_order_acquire) >> 32) != seen; };
      if (!spin_until(ready, kSpinMicros)) {
        std::unique_lock<std::mutex> lock(mutex_);
        ++sleeping_;
        cv_.wait(lock, ready);
        --sleeping_;
      }
      if (stopping_.load()) return;
      seen = state_.load(std::memory_order_acquire) >> 32;
      work(index, seen);
    }
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  int n_threads_ = 1;
  std::vector<std::thread> workers_;
  std::mutex run_mutex_;
  std::mutex mutex_;
  std::condition_variable cv_, done_cv_;
  std::atomic<const ChunkFn*> job_{nullptr};
  std::atomic<int64_t> n_chunks_{0};
  std::atomic<uint64_t> state_{0};  // generation << 32 | next chunk to claim
  std::atomic<int64_t> done_{0};    // chunks finished in the current generation
  std::atomic<int> sleeping_{0};    // workers blocked on cv_
  std::atomic<bool> stopping_{false};
};

int default_threads() {
  const char* env = std::getenv("RT_NUM_THREADS");
  if (env && *env) {
    int n = std::atoi(env);
    if (n >= 1 && n <= 1024) return n;
  }
  unsigned hw = std::thread::hardware_concurrency();
  return hw ? static_cast<int>(hw) : 1;
}

Pool& pool() {
  static Pool* instance = [] {
    openblas_set_num_threads(1);
    return new Pool(default_threads());  // never destroyed: workers may outlive static teardown
  }();
  return *instance;
}

}  // namespace

int thread_index() { return t_index; }

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  Pool& p = pool();
  int threads = p.size();
  if (t_in_parallel || threads == 1 || n <= grain) {
    fn(0, n);
    return;
  }
  // A few chunks per thread balance uneven work without much scheduling overhead.
  int64_t max_chunks = static_cast<int64_t>(threads) * 4;
  int64_t n_chunks = std::min<int64_t>(max_chunks, (n + grain - 1) / grain);
  if (n_chunks <= 1) {
    fn(0, n);
    return;
  }
  int64_t chunk_size = (n + n_chunks - 1) / n_chunks;
  n_chunks = (n + chunk_size - 1) / chunk_size;
  p.run(n_chunks, [&](int64_t c) {
    int64_t begin = c * chunk_size;
    int64_t end = std::min(n, begin + chunk_size);
    fn(begin, end);
  });
}

}  // namespace rt

extern "C" {
int rt_num_threads(void) { return rt::pool().size(); }
void rt_set_num_threads(int n) { rt::pool().resize(n); }
}
