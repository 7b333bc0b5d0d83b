// Command-line handling shared by the benchmark programs.
#ifndef NORMKIT_BENCH_BENCH_ARGS_HPP
#define NORMKIT_BENCH_BENCH_ARGS_HPP

#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace nkbench {

// --rounds=R (1 <= R <= 1000), taken out of the arguments before Google Benchmark reads
// them; `fallback` when absent. `program` names the caller in the error message.
inline int take_rounds(std::vector<char*>& args, int fallback, const char* program) {
    int rounds = fallback;
    for (auto it = args.begin() + 1; it != args.end();) {
        const std::string arg = *it;
        if (arg.rfind("--rounds=", 0) != 0) {
            ++it;
            continue;
        }
        char* end = nullptr;
        const long r = std::strtol(arg.c_str() + 9, &end, 10);
        if (end == arg.c_str() + 9 || *end != '\0' || r < 1 || r > 1000) {
            std::fprintf(stderr, "%s: %s: expected --rounds=<1..1000>\n", program, arg.c_str());
            std::exit(1);
        }
        rounds = int(r);
        it = args.erase(it);
    }
    return rounds;
}

// Google Benchmark initialized from the command line, with a minimum time of 0.05 s per
// run unless a flag says otherwise, and --rounds=R taken out first (`fallback` rounds
// when absent). Returns the rounds, or 0 after an argument neither understands.
inline int init_benchmark(int argc, char** argv, int fallback, const char* program) {
    static std::string min_time = "--benchmark_min_time=0.05"; // first: flags given later win
    std::vector<char*> args{argv[0], min_time.data()};
    args.insert(args.end(), argv + 1, argv + argc);
    const int rounds = take_rounds(args, fallback, program);
    int count = int(args.size());
    benchmark::Initialize(&count, args.data());
    if (benchmark::ReportUnrecognizedArguments(count, args.data())) return 0;
    return rounds;
}

} // namespace nkbench

#endif // NORMKIT_BENCH_BENCH_ARGS_HPP
