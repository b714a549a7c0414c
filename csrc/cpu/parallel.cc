// Thread pool: persistent workers woken per parallel_for; the calling thread works too.
#include "parallel.h"

#include <algorithm>
#include <atomic>
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
    // New workers start from the current generation, or they would run a stale job.
    uint64_t current = generation_;
    for (int i = 1; i < n; ++i) workers_.emplace_back([this, i, current] { worker(i, current); });
  }

  void run(int64_t n_chunks, const std::function<void(int64_t)>& chunk_fn) {
    std::lock_guard<std::mutex> run_lock(run_mutex_);  // one parallel region at a time
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = &chunk_fn;
      n_chunks_ = n_chunks;
      next_.store(0);
      pending_workers_ = n_threads_ - 1;
      ++generation_;
    }
    cv_.notify_all();
    work(0);
    std::unique_lock<std::mutex> lock(mutex_);
    done_cv_.wait(lock, [this] { return pending_workers_ == 0; });
    job_ = nullptr;
  }

 private:
  void work(int index) {
    t_index = index;
    t_in_parallel = true;
    for (;;) {
      int64_t chunk = next_.fetch_add(1);
      if (chunk >= n_chunks_) break;
      (*job_)(chunk);
    }
    t_in_parallel = false;
  }

  void worker(int index, uint64_t seen) {
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        cv_.wait(lock, [&] { return stopping_ || generation_ != seen; });
        if (stopping_) return;
        seen = generation_;
      }
      work(index);
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (--pending_workers_ == 0) done_cv_.notify_one();
      }
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
  const std::function<void(int64_t)>* job_ = nullptr;
  int64_t n_chunks_ = 0;
  std::atomic<int64_t> next_{0};
  int pending_workers_ = 0;
  uint64_t generation_ = 0;
  bool stopping_ = false;
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
