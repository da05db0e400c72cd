// tessera's native CPU kernels for inference (built at run time by tessera/backends/native with
// the machine's own compiler, for the instruction-set tier tessera chose; no PyTorch headers are
// needed, and the gcc/clang vector extensions below are lowered to that tier's vectors: 16 floats
// with AVX-512, 8 with AVX2 or elsewhere).
//
// 1. Windowed multi-head attention: softmax(q k^T * scale + bias) v for every (window, head)
//    pair of a Swin block, in one call; optionally cosine attention (Swin V2: q and k rows
//    normalised to unit length first) and a scale per head.
//    Why: each window is a tiny problem (49 tokens x 32 channels per head), and a general
//    attention kernel spends most of its time setting each one up. Here one task is one
//    (window, head) pair: its k (transposed) and v are copied into buffers that stay in L1/L2
//    (as fp32, or k as bf16 pairs where the processor multiplies those), the scores of a few
//    rows at a time are computed, scaled, biased, soft-maxed and multiplied by v in registers
//    and cache, and the result is written straight into the (token, channel) layout that the
//    output projection reads. Arithmetic is fp32 whatever the storage type (as in PyTorch's
//    fused attention).
//    Layouts (row-major, element strides):
//      qkv  [windows * n, ld_qkv]  q at column h*d, k at C + h*d, v at 2C + h*d (C = heads*d)
//      bias [bias_windows, heads, n, np] fp32, or null: rows padded to np (n rounded up to a
//           multiple of tessera_lanes()) with -inf; window w uses bias window w % bias_windows
//      scales [heads] fp32, or null for the one scale `scale`
//      out  [windows * n, ld_out]  head h at column h*d
//      order [tokens] int32, or null: the rows are then in window order (window w's token j in
//           row w * n + j); given, the tokens lie on their grid, `tokens` per image, and window
//           w's token j is in row (w / nW) * tokens + order[(w % nW) * n + j] (nW = tokens / n),
//           of qkv and of out alike: the attention gathers and scatters its rows itself.
//    dtype: 0 = fp32, 1 = bf16 (the storage of qkv and out).
//
// 2. The fp32 residual stream under autocast: a LayerNorm that reads the fp32 stream and
//    writes the bf16 input of the next linear layer in one pass, and the add of a bf16 layer
//    output to the fp32 stream (PyTorch casts a mixed-dtype operand in a separate pass).

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#if defined(__AVX512BF16__)
#include <immintrin.h>
#endif

namespace {

#if defined(__AVX512F__)
constexpr int kLanes = 16;  // floats per vector: one zmm register
constexpr int kRows = 4;    // score rows computed together (each loaded row of k^T serves four)
constexpr int kValueRows = 7;  // output rows computed together (7 x 7 = 49): 14 accumulators of 32 registers
#else
constexpr int kLanes = 8;   // one ymm register with AVX2 (two 128-bit registers elsewhere)
constexpr int kRows = 4;
constexpr int kValueRows = 4;  // 8 accumulators of 16 registers
#endif
constexpr int kTailDots = 2;  // at most this many key columns past the last whole vector: dot products
typedef float vf __attribute__((vector_size(kLanes * sizeof(float)), aligned(kLanes * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(kLanes * sizeof(int32_t)), aligned(kLanes * sizeof(float))));

inline float bf16_to_float(uint16_t x) {
    uint32_t bits = uint32_t(x) << 16;
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}

inline uint16_t float_to_bf16(float f) {  // round to nearest even, NaN kept NaN
    uint32_t bits;
    std::memcpy(&bits, &f, sizeof bits);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return uint16_t((bits >> 16) | 0x40u);
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return uint16_t(bits >> 16);
}

template <typename T> inline float load(const T* p);
template <> inline float load<float>(const float* p) { return *p; }
template <> inline float load<uint16_t>(const uint16_t* p) { return bf16_to_float(*p); }
template <typename T> inline void store(T* p, float v);
template <> inline void store<float>(float* p, float v) { *p = v; }
template <> inline void store<uint16_t>(uint16_t* p, float v) { *p = float_to_bf16(v); }

// A broadcast. (x - 0 is x for every x, so the subtraction folds away; x + 0 would not, as
// -0 + 0 is +0, and the compiler would keep a real add.)
inline vf splat(float x) { return x - vf{}; }

// Lanes permuted: each half of the vector swapped with its neighbour of the given width.
#if defined(__clang__)
#define TESSERA_SWAP(v, w) __builtin_shufflevector(v, v, TESSERA_SWAP_##w)
#else
#define TESSERA_SWAP(v, w) __builtin_shuffle(v, vi{TESSERA_SWAP_##w})
#endif
#if defined(__AVX512F__)
#define TESSERA_SWAP_8 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7
#define TESSERA_SWAP_4 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11
#define TESSERA_SWAP_2 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13
#define TESSERA_SWAP_1 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14
#else
#define TESSERA_SWAP_4 4, 5, 6, 7, 0, 1, 2, 3
#define TESSERA_SWAP_2 2, 3, 0, 1, 6, 7, 4, 5
#define TESSERA_SWAP_1 1, 0, 3, 2, 5, 4, 7, 6
#endif

inline float hsum(vf v) {  // log2(lanes) vector steps, not a chain of scalar adds
#if defined(__AVX512F__)
    v += TESSERA_SWAP(v, 8);
#endif
    v += TESSERA_SWAP(v, 4);
    v += TESSERA_SWAP(v, 2);
    v += TESSERA_SWAP(v, 1);
    return v[0];
}

inline vf vmax(vf a, vf b) { return a > b ? a : b; }

inline float hmax(vf v) {
#if defined(__AVX512F__)
    v = vmax(v, TESSERA_SWAP(v, 8));
#endif
    v = vmax(v, TESSERA_SWAP(v, 4));
    v = vmax(v, TESSERA_SWAP(v, 2));
    v = vmax(v, TESSERA_SWAP(v, 1));
    return v[0];
}

// exp(x) for x <= 0 (scores minus their row maximum): 2^n * p(r) with n = round(x / ln 2),
// r = x - n ln 2 in [-ln2/2, ln2/2] and p a degree-6 Taylor polynomial (relative error
// below 2e-7, the order of fp32 rounding). Inputs below -87 give 0, as expf would underflow.
inline vf exp_nonpositive(vf x) {
    const vf lo = splat(-87.0f);
    x = x < lo ? lo : x;
    const vf magic = splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
    vf t = x * splat(1.44269504088896341f) + magic;
    vi n = (vi)t - (vi)magic;  // the integer, read from the low mantissa bits
    t = t - magic;
    vf r = x - t * splat(0.693145751953125f);  // ln 2 in two parts (Cody and Waite)
    r = r - t * splat(1.428606765330187e-06f);
    vf p = splat(1.0f / 720);
    p = p * r + splat(1.0f / 120);
    p = p * r + splat(1.0f / 24);
    p = p * r + splat(1.0f / 6);
    p = p * r + splat(0.5f);
    p = p * r + splat(1.0f);
    p = p * r + splat(1.0f);
    vi scale = (n + 127) << 23;
    return p * (vf)scale;
}

// Per-thread scratch, reused across tasks. kt: k transposed, d rows of np floats (np: n
// rounded up to whole vectors, zero padded), or d/2 rows of np bf16 pairs; vv: v, n rows of
// dp floats; qq: q in fp32 (unused with bf16 pairs), rows rounded up to kRows, dp floats
// each; ktail: the last few rows of k as they are (see tail_scores), dp floats each; s: the
// task's weights, rows rounded up to kRows and to kValueRows, np floats each; inv: their
// rows' 1 / sum.
struct Buffers {
    float *kt = nullptr, *vv = nullptr, *qq = nullptr, *s = nullptr, *inv = nullptr, *ktail = nullptr;
    float* base = nullptr;
    long long* row[2] = {nullptr, nullptr};  // the rows of this task's window and of the one prefetched, n each
    bool ok = false;                         // false: out of memory (the buffers are then null)
    Buffers(int n, int np, int dp) {
        row[0] = static_cast<long long*>(std::malloc(2 * size_t(n) * sizeof(long long)));
        row[1] = row[0] != nullptr ? row[0] + n : nullptr;
        const int nr = (n + kRows - 1) / kRows * kRows;
        const int nvr = (n + kValueRows - 1) / kValueRows * kValueRows;  // rows the products read
        const size_t rows = nr > nvr ? nr : nvr;
        const size_t score = rows * np > size_t(dp) ? rows * np : size_t(dp);  // also stages a k row
        const size_t floats =
            size_t(dp) * np + size_t(n) * dp + size_t(nr) * dp + size_t(kTailDots) * dp + score + rows;
        const size_t bytes = (floats * sizeof(float) + sizeof(vf) - 1) / sizeof(vf) * sizeof(vf);
        base = static_cast<float*>(std::aligned_alloc(sizeof(vf), bytes));
        ok = base != nullptr && row[0] != nullptr;
        if (!ok) return;
        std::memset(base, 0, floats * sizeof(float));  // the padding stays zero for good
        kt = base;
        vv = kt + size_t(dp) * np;
        qq = vv + size_t(n) * dp;
        ktail = qq + size_t(nr) * dp;
        s = ktail + size_t(kTailDots) * dp;
        inv = s + score;
    }
    ~Buffers() {
        std::free(base);
        std::free(row[0]);
    }
    Buffers(const Buffers&) = delete;
    Buffers& operator=(const Buffers&) = delete;
};

// One row of d values into fp32; whole vectors where the row has them.
typedef uint16_t vh __attribute__((vector_size(kLanes * sizeof(uint16_t))));
typedef uint32_t vu __attribute__((vector_size(kLanes * sizeof(uint32_t))));

inline void load_row(const float* src, float* dst, int d) { std::memcpy(dst, src, d * sizeof(float)); }

inline void load_row(const uint16_t* src, float* dst, int d) {
    int e = 0;
    for (; e + kLanes <= d; e += kLanes) {
        vh x;
        std::memcpy(&x, src + e, sizeof x);
        const vu bits = __builtin_convertvector(x, vu) << 16;
        *reinterpret_cast<vf*>(dst + e) = (vf)bits;
    }
    for (; e < d; ++e) dst[e] = bf16_to_float(src[e]);
}

inline void store_vec(float* p, vf v) { std::memcpy(p, &v, sizeof v); }

inline void store_vec(uint16_t* p, vf v) {  // round to nearest even, NaN kept NaN
    vu bits = (vu)v;
    const vu nan = (bits & 0x7fffffffu) > 0x7f800000u;
    bits = nan ? (bits | 0x400000u) : bits + 0x7fffu + ((bits >> 16) & 1u);
    const vh half = __builtin_convertvector(bits >> 16, vh);
    std::memcpy(p, &half, sizeof half);
}

// Scores of kRows rows against the key columns [jv0, jv0 + JV) vectors: acc = q k^T.
template <int JV>
inline void score_block(const float* qq, int dp, int d, const vf* kt, int nv, int jv0, vf* s) {
    vf acc[kRows][JV] = {};
    for (int e = 0; e < d; ++e) {
        vf k[JV];
        for (int j = 0; j < JV; ++j) k[j] = kt[e * nv + jv0 + j];
        for (int r = 0; r < kRows; ++r) {
            const vf q = splat(qq[r * dp + e]);
            for (int j = 0; j < JV; ++j) acc[r][j] += q * k[j];
        }
    }
    for (int r = 0; r < kRows; ++r)
        for (int j = 0; j < JV; ++j) s[r * nv + jv0 + j] = acc[r][j];
}

// Scores of kRows rows against the `tail` key columns past the last whole vector (jv), each a
// dot product of a q row and a k row, written into vector jv of each score row with zeros in
// its other lanes (the padding, which the bias or the caller sets to -inf). Why: with 7x7
// windows (49 keys) the last vector of 16 (or 8) columns holds one key; computing it as a
// whole vector spends a quarter of the score arithmetic on padding.
inline void tail_scores(const float* qq, int dp, const float* ktail, int tail, int nv, int jv, vf* s) {
    const int dv = dp / kLanes;
    const vf* q = reinterpret_cast<const vf*>(qq);
    const vf* k = reinterpret_cast<const vf*>(ktail);
    for (int r = 0; r < kRows; ++r) {
        vf out = {};
        for (int t = 0; t < tail; ++t) {
            vf acc = {};
            for (int e = 0; e < dv; ++e) acc += q[r * dv + e] * k[t * dv + e];
            out[t] = hsum(acc);
        }
        s[r * nv + jv] = out;
    }
}

// Output of kValueRows rows for the value columns [ev0, ev0 + EV) vectors: o = p v / row sums.
template <int EV, typename T>
inline void value_block(const float* s, int np, int n, const vf* vv, int dv, int ev0, const float* inv, int rows,
                        T* const* dst, int d) {
    vf acc[kValueRows][EV] = {};
    for (int j = 0; j < n; ++j) {
        vf v[EV];
        for (int e = 0; e < EV; ++e) v[e] = vv[j * dv + ev0 + e];
        for (int r = 0; r < kValueRows; ++r) {
            const vf p = splat(s[r * np + j]);
            for (int e = 0; e < EV; ++e) acc[r][e] += p * v[e];
        }
    }
    for (int r = 0; r < rows; ++r) {
        const int e0 = ev0 * kLanes;
        for (int e = 0; e < EV; ++e) {
            const vf o = acc[r][e] * splat(inv[r]);
            const int lanes = d - e0 - e * kLanes < kLanes ? d - e0 - e * kLanes : kLanes;
            if (lanes == kLanes) {
                store_vec(dst[r] + e0 + e * kLanes, o);
            } else {
                for (int l = 0; l < lanes; ++l) store(dst[r] + e0 + e * kLanes + l, o[l]);
            }
        }
    }
}

#if defined(__AVX512BF16__)
// The same from bf16 q and k, two channels per instruction (vdpbf16ps: the products are exact
// in fp32 and summed in fp32). q: kRows rows of d2 channel pairs; kt2: k transposed by pairs,
// d2 rows of np pairs.
template <int JV>
inline void score_block_pairs(const uint32_t* const* q, int d2, const uint32_t* kt2, int np, int nv, int jv0,
                              vf* s) {
    __m512 acc[kRows][JV];
    for (int r = 0; r < kRows; ++r)
        for (int j = 0; j < JV; ++j) acc[r][j] = _mm512_setzero_ps();
    for (int e = 0; e < d2; ++e) {
        __m512bh k[JV];
        for (int j = 0; j < JV; ++j) k[j] = (__m512bh)_mm512_load_si512(kt2 + e * np + (jv0 + j) * kLanes);
        for (int r = 0; r < kRows; ++r) {
            const __m512bh qv = (__m512bh)_mm512_set1_epi32(int(q[r][e]));
            for (int j = 0; j < JV; ++j) acc[r][j] = _mm512_dpbf16_ps(acc[r][j], qv, k[j]);
        }
    }
    for (int r = 0; r < kRows; ++r)
        for (int j = 0; j < JV; ++j) s[r * nv + jv0 + j] = (vf)acc[r][j];
}
constexpr bool kPairs = true;
#else
constexpr bool kPairs = false;
#endif

// x / max(|x|, 1e-12) over d floats (F.normalize), for cosine attention.
inline void normalize(float* x, int d) {
    float sq = 0.0f;
    for (int e = 0; e < d; ++e) sq += x[e] * x[e];
    const float norm = std::sqrt(sq);
    const float inv = 1.0f / (norm > 1e-12f ? norm : 1e-12f);
    for (int e = 0; e < d; ++e) x[e] *= inv;
}

// The rows of qkv and out that hold window w's n tokens (see `order` above).
inline void window_rows(const int32_t* order, long long tokens, int n, long long w, long long* row) {
    if (order == nullptr) {
        for (int j = 0; j < n; ++j) row[j] = w * n + j;
        return;
    }
    const long long windows = tokens / n, base = (w / windows) * tokens;
    const int32_t* o = order + (w % windows) * n;
    for (int j = 0; j < n; ++j) row[j] = base + o[j];
}

template <typename T>
void one_task(const T* qkv, long long ld_qkv, const float* bias, int bias_windows, T* out, long long ld_out,
              const long long* row, long long w, int h, int heads, int n, int d, float scale, bool cosine,
              Buffers& b) {
    const int np = (n + kLanes - 1) / kLanes * kLanes, nv = np / kLanes;
    const int dp = (d + kLanes - 1) / kLanes * kLanes, dv = dp / kLanes;
    const long long c = (long long)heads * d;
    const T* head = qkv + (long long)h * d;  // row j of this head: head + row[j] * ld_qkv
    // bf16 scores two channels at a time where the processor can (d even: whole pairs)
    const bool pairs = kPairs && std::is_same<T, uint16_t>::value && d % 2 == 0 && !cosine;
    const int d2 = d / 2;
    const int tail = n % kLanes;
    const bool dots = !pairs && !cosine && tail <= kTailDots && tail > 0;
    const int tail_dots = dots ? tail : 0;  // key rows kept as rows for tail_scores
    uint32_t* kt2 = reinterpret_cast<uint32_t*>(b.kt);
    for (int j = 0; j < n; ++j) {
        const T* r = head + row[j] * ld_qkv;
        load_row(r + 2 * c, b.vv + j * dp, d);
        if (!pairs) {
            load_row(r, b.qq + j * dp, d);
            if (cosine) {  // k goes through the score buffer's first row to be normalised
                load_row(r + c, b.s, d);
                normalize(b.qq + j * dp, d);
                normalize(b.s, d);
                for (int e = 0; e < d; ++e) b.kt[e * np + j] = b.s[e];
            }
        }
    }
    // k transposed a channel at a time: each pass reads one number from each of the n rows
    // (cache lines that stay in L1) and writes one contiguous row of kt. Row by row instead,
    // every number would go to another line of kt: twice the time, more where qkv comes from
    // memory.
    if (pairs) {  // by channel pairs: one 32-bit word each
        for (int e = 0; e < d2; ++e) {
            uint32_t* kt_e = kt2 + e * np;
            for (int j = 0; j < n; ++j) std::memcpy(kt_e + j, head + c + row[j] * ld_qkv + 2 * e, sizeof(uint32_t));
        }
    } else if (!cosine) {  // (cosine attention transposed its normalised rows above)
        const T* k = head + c;
        for (int e = 0; e < d; ++e) {
            float* kt_e = b.kt + e * np;
            for (int j = 0; j < n - tail_dots; ++j) kt_e[j] = load(k + row[j] * ld_qkv + e);
        }
        for (int t = 0; t < tail_dots; ++t) load_row(k + row[n - tail_dots + t] * ld_qkv, b.ktail + t * dp, d);
    }
    const float* bias_h = bias ? bias + ((w % bias_windows) * heads + h) * (long long)n * np : nullptr;
    const vf* kt = reinterpret_cast<const vf*>(b.kt);
    const vf* vv = reinterpret_cast<const vf*>(b.vv);
    // All the weights first, then all the products with v. Why: the products read the weights
    // one number at a time, and reading numbers just written as whole vectors stalls (the
    // store has not reached the cache yet); a task's weights (49 x 64 floats) stay in L1.
    for (int i0 = 0; i0 < n; i0 += kRows) {
        const int rows_here = n - i0 < kRows ? n - i0 : kRows;
        vf* s = reinterpret_cast<vf*>(b.s) + (long long)i0 * nv;
        float* inv = b.inv + i0;
        int jv = 0;
        if (pairs) {
#if defined(__AVX512BF16__)
            const uint32_t* q[kRows];  // rows past the end repeat the last one (results unused)
            for (int r = 0; r < kRows; ++r)
                q[r] = reinterpret_cast<const uint32_t*>(head + row[i0 + r < n ? i0 + r : n - 1] * ld_qkv);
            for (; jv + 4 <= nv; jv += 4) score_block_pairs<4>(q, d2, kt2, np, nv, jv, s);
            for (; jv < nv; ++jv) score_block_pairs<1>(q, d2, kt2, np, nv, jv, s);
#endif
        } else {
            const float* qq = b.qq + i0 * dp;
            const int whole = dots ? nv - 1 : nv;
            for (; jv + 4 <= whole; jv += 4) score_block<4>(qq, dp, d, kt, nv, jv, s);
            if (whole - jv == 3) score_block<3>(qq, dp, d, kt, nv, jv, s);
            if (whole - jv == 2) score_block<2>(qq, dp, d, kt, nv, jv, s);
            if (whole - jv == 1) score_block<1>(qq, dp, d, kt, nv, jv, s);
            if (dots) tail_scores(qq, dp, b.ktail, tail, nv, whole, s);
        }
        const vf scale_v = splat(scale);
        for (int r = 0; r < rows_here; ++r) {
            vf* sr = s + r * nv;
            if (bias_h) {  // padded rows of np, -inf in the padding columns
                const vf* br = reinterpret_cast<const vf*>(bias_h + (long long)(i0 + r) * np);
                for (int k = 0; k < nv; ++k) sr[k] = sr[k] * scale_v + br[k];
            } else {
                for (int k = 0; k < nv; ++k) sr[k] *= scale_v;
                for (int j = n; j < np; ++j) reinterpret_cast<float*>(sr)[j] = -INFINITY;
            }
            vf mv = sr[0];
            for (int k = 1; k < nv; ++k) mv = vmax(mv, sr[k]);
            mv = splat(hmax(mv));
            vf sum = {};
            for (int k = 0; k < nv; ++k) {
                const vf e = exp_nonpositive(sr[k] - mv);
                sr[k] = e;
                sum += e;
            }
            inv[r] = 1.0f / hsum(sum);
        }
    }
    for (int i0 = 0; i0 < n; i0 += kValueRows) {
        const int rows_here = n - i0 < kValueRows ? n - i0 : kValueRows;
        const float* s = b.s + (long long)i0 * np;
        const float* inv = b.inv + i0;
        T* dst[kValueRows];
        for (int r = 0; r < kValueRows; ++r)
            dst[r] = out + row[i0 + (r < rows_here ? r : 0)] * ld_out + (long long)h * d;
        int ev = 0;
        for (; ev + 2 <= dv; ev += 2) value_block<2>(s, np, n, vv, dv, ev, inv, rows_here, dst, d);
        for (; ev < dv; ++ev) value_block<1>(s, np, n, vv, dv, ev, inv, rows_here, dst, d);
    }
}

// Ask for the cache lines that task (w, h) reads (its q, k and v columns of n rows) and
// writes (its output columns). Why: a block's qkv is 29 MB at stage 1 of swin_t with batch 8,
// more than the last-level cache, and each task reads three short pieces of 49 rows far apart:
// the hardware's prefetchers do not follow that pattern, so without this the kernel waits on
// memory (half the speed it has on data that fits in cache). Issued two tasks ahead.
// Inlined by force: GCC otherwise finds the function free of side effects and drops the calls.
template <typename T>
__attribute__((always_inline)) inline void prefetch_task(const T* qkv, long long ld_qkv, T* out, long long ld_out,
                                                        const long long* row, int h, int heads, int n, int d) {
    const long long c = (long long)heads * d;
    const int bytes = d * int(sizeof(T));
    for (int j = 0; j < n; ++j) {
        const char* r = reinterpret_cast<const char*>(qkv + row[j] * ld_qkv + (long long)h * d);
        const char* o = reinterpret_cast<const char*>(out + row[j] * ld_out + (long long)h * d);
        for (int b = 0; b < bytes; b += 64) {
            __builtin_prefetch(r + b, 0, 3);
            __builtin_prefetch(r + c * sizeof(T) + b, 0, 3);
            __builtin_prefetch(r + 2 * c * sizeof(T) + b, 0, 3);
            __builtin_prefetch(o + b, 1, 3);
        }
    }
}

template <typename T>
int run(const T* qkv, long long ld_qkv, const float* bias, int bias_windows, T* out, long long ld_out,
        const int32_t* order, long long tokens, long long windows, int heads, int n, int d, float scale,
        const float* scales, bool cosine, int threads) {
    const long long tasks = windows * heads;
    const int np = (n + kLanes - 1) / kLanes * kLanes, dp = (d + kLanes - 1) / kLanes * kLanes;
    int out_of_memory = 0;
#pragma omp parallel num_threads(threads)
    {
        Buffers buffers(n, np, dp);
        if (!buffers.ok) {
#pragma omp atomic write
            out_of_memory = 1;
        }
#pragma omp barrier
        if (!out_of_memory)  // the same for every thread after the barrier: all or none share the loop
#pragma omp for schedule(static)
        for (long long t = 0; t < tasks; ++t) {
            if (t + 2 < tasks) {
                window_rows(order, tokens, n, (t + 2) / heads, buffers.row[1]);
                prefetch_task(qkv, ld_qkv, out, ld_out, buffers.row[1], int((t + 2) % heads), heads, n, d);
            }
            window_rows(order, tokens, n, t / heads, buffers.row[0]);
            one_task(qkv, ld_qkv, bias, bias_windows, out, ld_out, buffers.row[0], t / heads, int(t % heads), heads,
                     n, d, scales ? scales[t % heads] : scale, cosine, buffers);
        }
    }
    return out_of_memory ? 3 : 0;
}

// ---------------------------------------------------------------------------------------
// The fp32 residual stream under autocast: its LayerNorm, written straight in the storage
// type of the linear layer that reads it, and the residual add of a half-precision output.

// LayerNorm over the last axis of x [rows, c] (fp32): the mean, then the mean square of the
// deviations (two passes over a row that is in L1), times weight plus bias. weight and bias
// are c floats (ones and zeros when the norm has none).
template <typename T>
void layer_norm(const float* x, long long rows, int c, const float* weight, const float* bias, float eps, T* out,
                int threads) {
    const int cv = c % kLanes == 0 ? c / kLanes : 0;  // whole vectors per row, or 0: scalar code
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long long r = 0; r < rows; ++r) {
        const float* xr = x + r * c;
        T* o = out + r * c;
        if (cv) {
            vf acc = {};
            for (int k = 0; k < cv; ++k) {
                vf v;
                std::memcpy(&v, xr + k * kLanes, sizeof v);
                acc += v;
            }
            const vf mean = splat(hsum(acc) / c);
            vf sq = {};
            for (int k = 0; k < cv; ++k) {
                vf v;
                std::memcpy(&v, xr + k * kLanes, sizeof v);
                v -= mean;
                sq += v * v;
            }
            const vf inv = splat(1.0f / std::sqrt(hsum(sq) / c + eps));
            for (int k = 0; k < cv; ++k) {
                vf v, w, b;
                std::memcpy(&v, xr + k * kLanes, sizeof v);
                std::memcpy(&w, weight + k * kLanes, sizeof w);
                std::memcpy(&b, bias + k * kLanes, sizeof b);
                store_vec(o + k * kLanes, (v - mean) * inv * w + b);
            }
            continue;
        }
        float sum = 0.0f;
        for (int i = 0; i < c; ++i) sum += xr[i];
        const float mean = sum / c;
        float sq = 0.0f;
        for (int i = 0; i < c; ++i) sq += (xr[i] - mean) * (xr[i] - mean);
        const float inv = 1.0f / std::sqrt(sq / c + eps);
        for (int i = 0; i < c; ++i) store(o + i, (xr[i] - mean) * inv * weight[i] + bias[i]);
    }
}

}  // namespace

extern "C" int tessera_lanes() { return kLanes; }

extern "C" int tessera_window_attention(int dtype, const void* qkv, long long ld_qkv, const float* bias,
                                        int bias_windows, void* out, long long ld_out, const int32_t* order,
                                        long long tokens, long long windows, int heads, int n, int d, float scale,
                                        const float* scales, int cosine, int threads) {
    if (n <= 0 || d <= 0 || heads <= 0 || windows < 0 || threads <= 0) return 1;
    if (bias && bias_windows <= 0) return 1;
    if (order && (tokens <= 0 || tokens % n || windows % (tokens / n))) return 1;
    if (dtype == 0)
        return run(static_cast<const float*>(qkv), ld_qkv, bias, bias_windows, static_cast<float*>(out), ld_out,
                   order, tokens, windows, heads, n, d, scale, scales, cosine != 0, threads);
    if (dtype == 1)
        return run(static_cast<const uint16_t*>(qkv), ld_qkv, bias, bias_windows, static_cast<uint16_t*>(out),
                   ld_out, order, tokens, windows, heads, n, d, scale, scales, cosine != 0, threads);
    return 2;
}

extern "C" int tessera_layer_norm(const float* x, long long rows, int c, const float* weight, const float* bias,
                                  float eps, int out_dtype, void* out, int threads) {
    if (rows < 0 || c <= 0 || threads <= 0) return 1;
    if (out_dtype == 0)
        layer_norm(x, rows, c, weight, bias, eps, static_cast<float*>(out), threads);
    else if (out_dtype == 1)
        layer_norm(x, rows, c, weight, bias, eps, static_cast<uint16_t*>(out), threads);
    else
        return 2;
    return 0;
}

// out = a + b, a fp32, b bf16, n elements (out may be a).
extern "C" int tessera_add_bf16(const float* a, const uint16_t* b, float* out, long long n, int threads) {
    if (n < 0 || threads <= 0) return 1;
#pragma omp parallel for simd num_threads(threads) schedule(static)
    for (long long i = 0; i < n; ++i) out[i] = a[i] + bf16_to_float(b[i]);
    return 0;
}
