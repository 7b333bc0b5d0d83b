// A data-parallel training loop over MPI with synchronized batch norm, checked against
// one process running the same loop on the whole batch.
//
// The model: y = BN(x; scale, shift), loss = 0.5 * sum((y - target)^2), so diff_dst = y -
// target; plain SGD on scale and shift (rate 0.5 / values per channel); three steps. Every rank generates the whole batch
// from one seed, keeps its own slice (uneven: rank r weighs r + 1; with --empty-rank,
// rank 1 holds no sample) and runs the loop with its slice; each rank then runs the loop
// on the whole batch alone and compares:
//   samples_per_piece 0: with nk_batch_norm_forward_training / nk_batch_norm_backward
//     from the same model state at each step (the single process takes the distributed
//     model's parameters and running statistics first, so differences do not compound):
//     dst and diff_src within 1e-5 absolute, statistics within 1e-6 relative;
//   samples_per_piece 1: with the same synchronized loop as one rank, bit for bit.
// Every rank must also end with the same parameters and running statistics, bit for bit.
//
//   mpirun -np 3 sync_batch_norm_mpi [--empty-rank]
#include "normkit/normkit.h"

#include <mpi.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

int g_rank = 0, g_size = 1, g_failures = 0;

void fail(const std::string& what) {
    if (g_failures < 20) std::printf("rank %d: FAILED %s\n", g_rank, what.c_str());
    ++g_failures;
}

void require(nk_status s, const char* call) {
    if (s != NK_OK) {
        std::printf("rank %d: %s returned %s: %s\n", g_rank, call, nk_status_string(s), nk_last_error_message());
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
}

struct Config {
    int32_t layout;
    int64_t n, c, s;
    int64_t samples_per_piece;
};

std::string name(const Config& k) {
    return std::string(k.layout == NK_LAYOUT_NCS ? "NCS " : "NSC ") + std::to_string(k.n) + "x" + std::to_string(k.c) +
           "x" + std::to_string(k.s) + " g=" + std::to_string(k.samples_per_piece);
}

// The model's state and what one step produced.
struct State {
    std::vector<float> scale, shift, running_mean, running_var;
    std::vector<float> dst, diff_src, save_mean, save_invstd, diff_scale, diff_shift;
};

constexpr int kSteps = 3;
constexpr float kLearningRate = 0.5f; // per value of a channel

// All ranks' partials, gathered (sizes first: with samples_per_piece > 0 they differ), then
// merged in rank order, which is the global batch order.
std::vector<unsigned char> allgather_merge(const nk_batch_norm_desc& d, const std::vector<unsigned char>& mine) {
    const int64_t my_bytes = int64_t(mine.size());
    std::vector<int64_t> sizes(static_cast<size_t>(g_size));
    MPI_Allgather(&my_bytes, 1, MPI_INT64_T, sizes.data(), 1, MPI_INT64_T, MPI_COMM_WORLD);
    std::vector<int> counts(static_cast<size_t>(g_size)), displs(static_cast<size_t>(g_size));
    int total = 0;
    for (int r = 0; r < g_size; ++r) {
        counts[size_t(r)] = int(sizes[size_t(r)]);
        displs[size_t(r)] = total;
        total += counts[size_t(r)];
    }
    std::vector<unsigned char> all(static_cast<size_t>(total));
    MPI_Allgatherv(mine.data(), int(my_bytes), MPI_BYTE, all.data(), counts.data(), displs.data(), MPI_BYTE,
                   MPI_COMM_WORLD);
    std::vector<const void*> parts(static_cast<size_t>(g_size));
    for (int r = 0; r < g_size; ++r) parts[size_t(r)] = all.data() + displs[size_t(r)];
    int64_t merged_bytes = 0;
    require(nk_batch_norm_partial_size(&d, 0, &merged_bytes), "nk_batch_norm_partial_size");
    std::vector<unsigned char> merged(static_cast<size_t>(merged_bytes));
    require(nk_batch_norm_merge_partials(&d, parts.data(), sizes.data(), g_size, merged.data(), merged_bytes),
            "nk_batch_norm_merge_partials");
    return merged;
}

// One synchronized step on `n` samples (x, target: n samples of the batch). With
// `alone`, no communication (the single-process run of the same loop).
void sync_step(const Config& k, int64_t n, const float* x, const float* target, State& st, bool alone) {
    nk_batch_norm_desc d;
    require(nk_batch_norm_desc_init(&d, k.layout, n, k.c, k.s), "nk_batch_norm_desc_init");
    const size_t count = size_t(n * k.c * k.s);
    int64_t bytes = 0;
    require(nk_batch_norm_partial_size(&d, k.samples_per_piece, &bytes), "nk_batch_norm_partial_size");
    std::vector<unsigned char> partial(static_cast<size_t>(bytes));
    require(nk_batch_norm_stats(nullptr, &d, k.samples_per_piece, x, partial.data(), bytes), "nk_batch_norm_stats");
    std::vector<unsigned char> merged = alone ? partial : allgather_merge(d, partial);
    st.dst.assign(count, 0.0f);
    require(nk_batch_norm_forward_from_partial(nullptr, &d, merged.data(), int64_t(merged.size()), x, st.dst.data(),
                                               st.scale.data(), st.shift.data(), st.running_mean.data(),
                                               st.running_var.data(), st.save_mean.data(), st.save_invstd.data()),
            "nk_batch_norm_forward_from_partial");
    std::vector<float> dy(count);
    for (size_t i = 0; i < count; ++i) dy[i] = st.dst[i] - target[i];
    require(nk_batch_norm_backward_reduce(nullptr, &d, k.samples_per_piece, x, dy.data(), st.save_mean.data(),
                                          partial.data(), bytes),
            "nk_batch_norm_backward_reduce");
    merged = alone ? partial : allgather_merge(d, partial);
    st.diff_src.assign(count, 0.0f);
    require(nk_batch_norm_backward_from_reduced(nullptr, &d, merged.data(), int64_t(merged.size()), x, dy.data(),
                                                st.scale.data(), st.save_mean.data(), st.save_invstd.data(),
                                                st.diff_src.data(), st.diff_scale.data(), st.diff_shift.data()),
            "nk_batch_norm_backward_from_reduced");
}

// The same step by one training forward and one backward over the whole batch.
void plain_step(const Config& k, const float* x, const float* target, State& st) {
    nk_batch_norm_desc d;
    require(nk_batch_norm_desc_init(&d, k.layout, k.n, k.c, k.s), "nk_batch_norm_desc_init");
    const size_t count = size_t(k.n * k.c * k.s);
    st.dst.assign(count, 0.0f);
    require(nk_batch_norm_forward_training(nullptr, &d, x, st.dst.data(), st.scale.data(), st.shift.data(),
                                           st.running_mean.data(), st.running_var.data(), st.save_mean.data(),
                                           st.save_invstd.data()),
            "nk_batch_norm_forward_training");
    std::vector<float> dy(count);
    for (size_t i = 0; i < count; ++i) dy[i] = st.dst[i] - target[i];
    st.diff_src.assign(count, 0.0f);
    require(nk_batch_norm_backward(nullptr, &d, x, dy.data(), st.scale.data(), st.save_mean.data(), st.save_invstd.data(),
                                   st.diff_src.data(), st.diff_scale.data(), st.diff_shift.data()),
            "nk_batch_norm_backward");
}

void sgd(State& st, int64_t values_per_channel) {
    const float rate = kLearningRate / float(values_per_channel);
    for (size_t c = 0; c < st.scale.size(); ++c) {
        st.scale[c] -= rate * st.diff_scale[c];
        st.shift[c] -= rate * st.diff_shift[c];
    }
}

State initial(const Config& k) {
    State st;
    const size_t C = size_t(k.c);
    st.scale.assign(C, 1.0f);
    st.shift.assign(C, 0.0f);
    st.running_mean.assign(C, 0.0f);
    st.running_var.assign(C, 1.0f);
    st.save_mean.assign(C, 0.0f);
    st.save_invstd.assign(C, 0.0f);
    st.diff_scale.assign(C, 0.0f);
    st.diff_shift.assign(C, 0.0f);
    return st;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// got[i] vs want[offset + i] within abs + rel * |want|.
void compare(const std::string& what, const std::vector<float>& got, const std::vector<float>& want, size_t offset,
             double abs_tol, double rel_tol) {
    for (size_t i = 0; i < got.size(); ++i) {
        const double w = want[offset + i], e = std::fabs(double(got[i]) - w);
        if (!(e <= abs_tol + rel_tol * std::fabs(w))) {
            fail(what + "[" + std::to_string(i) + "] " + std::to_string(got[i]) + " vs " + std::to_string(w));
            return;
        }
    }
}

void run(const Config& k, bool empty_rank) {
    // The slices: rank r weighs r + 1 (rank 1 nothing with empty_rank), the last takes the rest.
    std::vector<int64_t> first(size_t(g_size) + 1, 0);
    int64_t weights = 0;
    for (int r = 0; r < g_size; ++r) weights += (empty_rank && r == 1) ? 0 : r + 1;
    for (int r = 0; r < g_size; ++r) {
        const int64_t w = (empty_rank && r == 1) ? 0 : r + 1;
        first[size_t(r) + 1] = r == g_size - 1 ? k.n : first[size_t(r)] + k.n * w / weights;
    }
    const int64_t n0 = first[size_t(g_rank)], n = first[size_t(g_rank) + 1] - n0;
    const size_t per_sample = size_t(k.c * k.s), count = size_t(k.n) * per_sample;

    std::mt19937_64 rng(1234 + uint64_t(k.n * k.c));
    std::normal_distribution<double> dist(0.0, 1.0);
    std::vector<float> x(count), target(count);
    for (size_t i = 0; i < count; ++i) {
        const size_t c = k.layout == NK_LAYOUT_NCS ? i / size_t(k.s) % size_t(k.c) : i % size_t(k.c);
        x[i] = float(2.0 + 0.25 * double(c) + 1.5 * dist(rng));
        target[i] = float(0.5 * dist(rng));
    }

    State mine = initial(k), whole = initial(k);
    for (int step = 0; step < kSteps; ++step) {
        if (k.samples_per_piece == 0) {
            whole.scale = mine.scale;
            whole.shift = mine.shift;
            whole.running_mean = mine.running_mean;
            whole.running_var = mine.running_var;
        }
        sync_step(k, n, x.data() + size_t(n0) * per_sample, target.data() + size_t(n0) * per_sample, mine, false);
        if (k.samples_per_piece > 0)
            sync_step(k, k.n, x.data(), target.data(), whole, true);
        else
            plain_step(k, x.data(), target.data(), whole);
        const std::string at = name(k) + " step " + std::to_string(step) + ": ";
        if (k.samples_per_piece > 0) {
            // The same bits as one process, whatever the number of ranks.
            std::vector<float> slice(whole.dst.begin() + long(size_t(n0) * per_sample),
                                     whole.dst.begin() + long(size_t(n0 + n) * per_sample));
            if (!same_bits(mine.dst, slice)) fail(at + "dst bits");
            slice.assign(whole.diff_src.begin() + long(size_t(n0) * per_sample),
                         whole.diff_src.begin() + long(size_t(n0 + n) * per_sample));
            if (!same_bits(mine.diff_src, slice)) fail(at + "diff_src bits");
            for (auto [a, b, what] : {std::make_tuple(&mine.save_mean, &whole.save_mean, "save_mean"),
                                      std::make_tuple(&mine.save_invstd, &whole.save_invstd, "save_invstd"),
                                      std::make_tuple(&mine.running_mean, &whole.running_mean, "running_mean"),
                                      std::make_tuple(&mine.running_var, &whole.running_var, "running_var"),
                                      std::make_tuple(&mine.diff_scale, &whole.diff_scale, "diff_scale"),
                                      std::make_tuple(&mine.diff_shift, &whole.diff_shift, "diff_shift")})
                if (!same_bits(*a, *b)) fail(at + what + " bits");
        } else {
            compare(at + "dst", mine.dst, whole.dst, size_t(n0) * per_sample, 1e-5, 0);
            compare(at + "diff_src", mine.diff_src, whole.diff_src, size_t(n0) * per_sample, 1e-5, 0);
            compare(at + "save_mean", mine.save_mean, whole.save_mean, 0, 1e-7, 1e-6);
            compare(at + "save_invstd", mine.save_invstd, whole.save_invstd, 0, 0, 1e-6);
            compare(at + "running_mean", mine.running_mean, whole.running_mean, 0, 1e-7, 1e-6);
            compare(at + "running_var", mine.running_var, whole.running_var, 0, 0, 1e-6);
            compare(at + "diff_scale", mine.diff_scale, whole.diff_scale, 0, 1e-4, 1e-5);
            compare(at + "diff_shift", mine.diff_shift, whole.diff_shift, 0, 1e-4, 1e-5);
        }
        sgd(mine, k.n * k.s);
        sgd(whole, k.n * k.s);
    }
    // Every rank holds the same model: rank 0's bits, broadcast, compared.
    for (std::vector<float>* v : {&mine.scale, &mine.shift, &mine.running_mean, &mine.running_var}) {
        std::vector<float> root = *v;
        MPI_Bcast(root.data(), int(root.size()), MPI_FLOAT, 0, MPI_COMM_WORLD);
        if (!same_bits(root, *v)) fail(name(k) + ": this rank's model differs from rank 0's");
    }
}

} // namespace

int main(int argc, char** argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    const bool empty_rank = argc > 1 && std::strcmp(argv[1], "--empty-rank") == 0;
    const Config configs[] = {
        {NK_LAYOUT_NCS, 40, 5, 30, 0}, {NK_LAYOUT_NCS, 40, 5, 30, 1}, {NK_LAYOUT_NSC, 24, 70, 50, 0},
        {NK_LAYOUT_NSC, 24, 70, 50, 1}, {NK_LAYOUT_NCS, 1500, 9, 1, 0}, {NK_LAYOUT_NCS, 1500, 9, 1, 1},
    };
    for (const Config& k : configs) run(k, empty_rank);
    int failures = 0;
    MPI_Allreduce(&g_failures, &failures, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (g_rank == 0)
        std::printf("sync batch norm over %d ranks%s: %d configurations, %s (%d failures)\n", g_size,
                    empty_rank ? " (rank 1 empty)" : "", int(sizeof configs / sizeof configs[0]),
                    failures == 0 ? "PASSED" : "FAILED", failures);
    MPI_Finalize();
    return failures == 0 ? 0 : 1;
}
