// libFuzzer harness for the native ops that take untrusted indices and sizes: the
// values a malformed checkpoint, dataset or request can put in front of the kernels
// (token ids, row indices, positions, targets, expert ids, sort permutations and
// bounds, attention positions). Each input picks an op, small sizes, and raw index
// values straight from the fuzzer's bytes; the op must either succeed or return an
// RT_ERR_* status with a message — never read or write out of bounds (AddressSanitizer),
// hit undefined behaviour (UBSan) or crash. Built and run by `npm run fuzz`.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "rt_ops.h"

namespace {

struct Input {
  const uint8_t* p;
  size_t n;
  uint8_t byte() {
    if (!n) return 0;
    n--;
    return *p++;
  }
  int64_t size(int64_t max) { return byte() % (max + 1); }  // 0 … max
  int32_t i32() {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v = (v << 8) | byte();
    // Mostly small (plausible or just out of range), sometimes anything.
    if ((v & 7) != 0) return static_cast<int32_t>((v >> 3) % 64) - 8;
    return static_cast<int32_t>(v);
  }
  std::vector<int32_t> ints(int64_t count) {
    std::vector<int32_t> v(static_cast<size_t>(count) + 1);  // +1: never a zero-size buffer
    for (int64_t i = 0; i < count; i++) v[i] = i32();
    return v;
  }
};

std::vector<float> floats(int64_t count, float value = 0.5f) {
  return std::vector<float>(static_cast<size_t>(count) + 1, value);
}

void expect_valid(rt_status st, const char* op) {
  if (st == RT_OK) return;
  const char* msg = rt_last_error();
  if (st < RT_ERR_ARG || st > RT_ERR_INTERNAL || !msg || !msg[0]) {
    std::fprintf(stderr, "%s: status %d without a message\n", op, static_cast<int>(st));
    std::abort();
  }
  if (st == RT_ERR_INTERNAL || st == RT_ERR_NOMEM) {
    std::fprintf(stderr, "%s: unexpected %s: %s\n", op, rt_status_name(st), msg);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static bool once = [] {
    rt_set_num_threads(1);
    return true;
  }();
  (void)once;
  Input in{data, size};
  switch (in.byte() % 10) {
    case 0: {  // embedding: ids against the vocabulary
      int64_t T = in.size(16), V = in.size(16), C = in.size(8);
      auto ids = in.ints(T);
      auto table = floats(V * C), out = floats(T * C);
      expect_valid(rt_embedding_fwd(out.data(), table.data(), RT_F32, ids.data(), T, V, C), "embedding_fwd");
      auto dtable = floats(V * C, 0.f);
      expect_valid(rt_embedding_bwd(dtable.data(), out.data(), ids.data(), T, V, C), "embedding_bwd");
      break;
    }
    case 1: {  // gather / scatter rows
      int64_t N = in.size(16), R = in.size(16), C = in.size(8);
      auto idx = in.ints(N);
      auto x = floats(R * C), y = floats(N * C);
      expect_valid(rt_gather_rows(y.data(), x.data(), idx.data(), N, R, C), "gather_rows");
      expect_valid(rt_scatter_rows(x.data(), y.data(), idx.data(), N, R, C, in.byte() & 1), "scatter_rows");
      break;
    }
    case 2: {  // rope: positions
      int64_t T = in.size(8), H = 1 + in.size(3), D = 2 * in.size(8);
      auto pos = in.ints(T);
      auto x = floats(T * H * D), out = floats(T * H * D), inv = floats(D / 2, 0.01f);
      expect_valid(rt_rope_fwd(out.data(), x.data(), pos.data(), inv.data(), 1.f, T, H, D), "rope_fwd");
      break;
    }
    case 3: {  // cross-entropy: targets and the ignore index
      int64_t T = in.size(8), V = in.size(16);
      auto targets = in.ints(T);
      int32_t ignore = in.i32();
      auto logits = floats(T * V), lse = floats(T), rows = floats(T);
      double mean = 0;
      int64_t counted = 0;
      rt_status st = rt_cross_entropy_fwd(&mean, &counted, rows.data(), lse.data(), logits.data(), targets.data(), T, V, ignore);
      expect_valid(st, "cross_entropy_fwd");
      if (st == RT_OK) {
        auto d = floats(T * V);
        expect_valid(rt_cross_entropy_bwd(d.data(), logits.data(), lse.data(), targets.data(), T, V, ignore, 1.f),
                     "cross_entropy_bwd");
      }
      break;
    }
    case 4: {  // moe sort: expert ids (−1 = dropped)
      int64_t T = in.size(8), E = in.size(6), K = in.size(3);
      auto topk = in.ints(T * K);
      std::vector<int32_t> perm(T * K + 1), inv(T * K + 1), bounds(E + 2);
      int64_t live = 0;
      expect_valid(rt_moe_sort(perm.data(), inv.data(), bounds.data(), &live, topk.data(), T, E, K), "moe_sort");
      break;
    }
    case 5: {  // moe experts: untrusted perm and bounds
      int64_t T = in.size(6), E = 1 + in.size(4), K = 1 + in.size(2), C = 1 + in.size(6), I = 1 + in.size(6);
      auto bounds = in.ints(E + 1);
      // The binding sizes y, perm and the activations to A = bounds[E] when that is a
      // plausible count (0 … T·K), else 0; the kernel validates bounds and perm itself.
      int64_t A = bounds[E] >= 0 && bounds[E] <= T * K ? bounds[E] : 0;
      auto perm = in.ints(A);
      auto x = floats(T * C), y = floats(A * C), wg = floats(E * I * C), wu = floats(E * I * C), wd = floats(E * C * I);
      auto ag = floats(A * I), au = floats(A * I);
      expect_valid(rt_moe_experts_fwd(y.data(), ag.data(), au.data(), x.data(), perm.data(), bounds.data(), wg.data(),
                                      wu.data(), wd.data(), RT_F32, T, E, K, C, I),
                   "moe_experts_fwd");
      break;
    }
    case 6: {  // moe combine: untrusted inverse permutation
      int64_t T = in.size(8), K = 1 + in.size(3), C = 1 + in.size(8), A = in.size(T * K);
      auto inv = in.ints(T * K);
      auto y = floats(A * C), w = floats(T * K), out = floats(T * C);
      expect_valid(rt_moe_combine_fwd(out.data(), y.data(), inv.data(), w.data(), T, K, C, A), "moe_combine_fwd");
      auto dy = floats(A * C), dw = floats(T * K);
      expect_valid(rt_moe_combine_bwd(dy.data(), dw.data(), out.data(), y.data(), inv.data(), w.data(), T, K, C, A),
                   "moe_combine_bwd");
      break;
    }
    case 7: {  // moe route: logits → top-k
      int64_t T = in.size(8), E = in.size(8), K = in.size(4);
      auto logits = floats(T * E), probs = floats(T * E), w = floats(T * K);
      std::vector<int32_t> idx(T * K + 1);
      expect_valid(rt_moe_route_fwd(probs.data(), idx.data(), w.data(), logits.data(), T, E, K, in.byte() & 1), "moe_route_fwd");
      break;
    }
    case 8: {  // attention: positions (routed subsets, padding)
      int64_t B = 1 + in.size(1), Tq = in.size(6), Tk = in.size(6), Hkv = 1 + in.size(1), G = 1 + in.size(1),
              D = 1 + in.size(8), window = in.size(4);
      int64_t Hq = Hkv * G;
      auto qpos = in.ints(B * Tq), kpos = in.ints(B * Tk);
      auto q = floats(B * Tq * Hq * D), k = floats(B * Tk * Hkv * D), v = floats(B * Tk * Hkv * D);
      auto out = floats(B * Tq * Hq * D), lse = floats(B * Hq * Tq);
      bool with_pos = in.byte() & 1;
      rt_status st = rt_attention_fwd(out.data(), lse.data(), q.data(), k.data(), v.data(), with_pos ? qpos.data() : nullptr,
                                      with_pos ? kpos.data() : nullptr, B, Tq, Tk, Hq, Hkv, D, 0.5f, window);
      expect_valid(st, "attention_fwd");
      if (st == RT_OK) {
        auto dq = floats(B * Tq * Hq * D), dk = floats(B * Tk * Hkv * D), dv = floats(B * Tk * Hkv * D);
        expect_valid(rt_attention_bwd(dq.data(), dk.data(), dv.data(), out.data(), q.data(), k.data(), v.data(), out.data(),
                                      lse.data(), with_pos ? qpos.data() : nullptr, with_pos ? kpos.data() : nullptr, B, Tq,
                                      Tk, Hq, Hkv, D, 0.5f, window),
                     "attention_bwd");
      }
      break;
    }
    default: {  // sequence router: padding masks (a sequence with no valid token is an error)
      int64_t B = in.size(4), T = in.size(6), C = 1 + in.size(8);
      auto mask = in.ints(B * T);
      auto h = floats(B * T * C), w = floats(C), pooled = floats(B * C), score = floats(B), gate = floats(B);
      std::vector<int32_t> exec(B + 1);
      int64_t count = 0;
      expect_valid(rt_router_seq_fwd(pooled.data(), score.data(), gate.data(), exec.data(), &count, h.data(), mask.data(),
                                     w.data(), B, T, C, 0.5f),
                   "router_seq_fwd");
      break;
    }
  }
  return 0;
}
