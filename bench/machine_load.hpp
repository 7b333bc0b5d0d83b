// How much of the machine other processes took while a benchmark ran. The machine is
// shared, and a 2-thread OpenMP region whose partner is descheduled can run 10x slower,
// so every measurement carries this figure and the summary points at the disturbed ones.
#ifndef NORMKIT_BENCH_MACHINE_LOAD_HPP
#define NORMKIT_BENCH_MACHINE_LOAD_HPP

#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>

namespace nkbench {

class ForeignLoad {
public:
    ForeignLoad() : start_(sample()) {}

    // The fraction of all CPUs' time since construction spent outside this process (other
    // processes, the kernel on their behalf, the hypervisor's steal). NaN when unknown.
    // /proc/stat counts in ticks (10 ms): reliable to about 0.02 s of CPU time.
    double fraction() const {
        const Sample now = sample();
        const double wall = now.wall - start_.wall;
        if (!(now.busy >= 0 && start_.busy >= 0) || wall <= 0 || cpus_ <= 0) return NAN;
        const double others = (now.busy - start_.busy) - (now.self - start_.self);
        return std::fmax(0.0, others / (wall * double(cpus_)));
    }

private:
    struct Sample {
        double wall = 0, busy = -1, self = 0; // seconds
    };

    static Sample sample() {
        Sample s;
        s.wall = std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
        if (FILE* f = std::fopen("/proc/stat", "r")) {
            unsigned long long user, nice, system, idle, iowait, irq, softirq, steal;
            if (std::fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &user, &nice, &system, &idle,
                            &iowait, &irq, &softirq, &steal) == 8)
                s.busy = double(user + nice + system + irq + softirq + steal) / double(sysconf(_SC_CLK_TCK));
            std::fclose(f);
        }
        rusage usage{};
        getrusage(RUSAGE_SELF, &usage);
        s.self = double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
                 1e-6 * double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
        return s;
    }

    long cpus_ = sysconf(_SC_NPROCESSORS_ONLN);
    Sample start_;
};

} // namespace nkbench

#endif // NORMKIT_BENCH_MACHINE_LOAD_HPP
