/*
 * normkit_bench_summary: reads the JSON of one normkit_bench run
 * (--benchmark_out=<file> --benchmark_out_format=json) and prints, per case, normkit's
 * GB/s, its fraction of the roofline, of the two-pass kernel (training forward and
 * backward) and its speed-up over oneDNN, then geometric means per mode and the cases
 * that miss the targets. normkit_bench runs each case in rounds (roofline, two-pass,
 * oneDNN, normkit back to back, then again): a ratio is the median of the
 * rounds' ratios, so it only compares measurements taken within a second of each other on
 * this shared machine, whose speed can change from one minute to the next (runs pair up
 * by their "round" counter, or by position in the file without one). GB/s use the
 * median time of a benchmark's runs (the "median" aggregate when there is no single run).
 *
 * Usage: normkit_bench_summary [--strict] <normkit_bench.json>
 *   --strict: exit 1 when a target is missed (exit 2: unreadable input).
 * Plain C++17, no dependency: a fresh machine needs no python to read the results.
 */
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace {

// ---- A small JSON reader (what Google Benchmark writes, plus its NaN / Infinity) ----

struct Json {
    enum Type { Null, Bool, Number, String, Array, Object } type = Null;
    bool boolean = false;
    double number = 0;
    std::string string;
    std::vector<Json> array;
    std::vector<std::pair<std::string, Json>> object;

    const Json* get(const char* key) const {
        for (const auto& kv : object)
            if (kv.first == key) return &kv.second;
        return nullptr;
    }
    std::string text(const char* key, const std::string& fallback = "") const {
        const Json* v = get(key);
        return v != nullptr && v->type == String ? v->string : fallback;
    }
    double num(const char* key, double fallback = NAN) const {
        const Json* v = get(key);
        return v != nullptr && v->type == Number ? v->number : fallback;
    }
    bool flag(const char* key) const {
        const Json* v = get(key);
        return v != nullptr && v->type == Bool && v->boolean;
    }
};

class JsonParser {
public:
    explicit JsonParser(const std::string& s) : s_(s) {}

    Json parse() {
        Json v = value();
        skip_space();
        if (i_ != s_.size()) fail("trailing characters");
        return v;
    }

private:
    [[noreturn]] void fail(const char* what) const {
        throw std::runtime_error(std::string(what) + " at offset " + std::to_string(i_));
    }
    void skip_space() {
        while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\r' || s_[i_] == '\n')) ++i_;
    }
    bool consume(const char* word) {
        const size_t n = std::strlen(word);
        if (s_.compare(i_, n, word) != 0) return false;
        i_ += n;
        return true;
    }
    void expect(char c) {
        skip_space();
        if (i_ >= s_.size() || s_[i_] != c) fail((std::string("expected '") + c + "'").c_str());
        ++i_;
    }

    Json value() {
        skip_space();
        if (i_ >= s_.size()) fail("unexpected end");
        Json v;
        const char c = s_[i_];
        if (c == '{') {
            v.type = Json::Object;
            ++i_;
            skip_space();
            if (i_ < s_.size() && s_[i_] == '}') return ++i_, v;
            for (;;) {
                skip_space();
                std::string key = string();
                expect(':');
                v.object.emplace_back(std::move(key), value());
                skip_space();
                if (i_ < s_.size() && s_[i_] == ',') {
                    ++i_;
                    continue;
                }
                expect('}');
                return v;
            }
        }
        if (c == '[') {
            v.type = Json::Array;
            ++i_;
            skip_space();
            if (i_ < s_.size() && s_[i_] == ']') return ++i_, v;
            for (;;) {
                v.array.push_back(value());
                skip_space();
                if (i_ < s_.size() && s_[i_] == ',') {
                    ++i_;
                    continue;
                }
                expect(']');
                return v;
            }
        }
        if (c == '"') {
            v.type = Json::String;
            v.string = string();
            return v;
        }
        if (consume("true")) {
            v.type = Json::Bool;
            v.boolean = true;
            return v;
        }
        if (consume("false")) {
            v.type = Json::Bool;
            return v;
        }
        if (consume("null")) return v;
        v.type = Json::Number;
        if (consume("NaN") || consume("-NaN")) v.number = NAN;
        else if (consume("Infinity")) v.number = INFINITY;
        else if (consume("-Infinity")) v.number = -INFINITY;
        else {
            const char* begin = s_.c_str() + i_;
            char* end = nullptr;
            v.number = std::strtod(begin, &end);
            if (end == begin) fail("bad value");
            i_ += size_t(end - begin);
        }
        return v;
    }

    std::string string() {
        if (i_ >= s_.size() || s_[i_] != '"') fail("expected a string");
        ++i_;
        std::string out;
        while (i_ < s_.size() && s_[i_] != '"') {
            char c = s_[i_++];
            if (c != '\\') {
                out += c;
                continue;
            }
            if (i_ >= s_.size()) fail("bad escape");
            c = s_[i_++];
            switch (c) {
            case 'b': out += '\b'; break;
            case 'f': out += '\f'; break;
            case 'n': out += '\n'; break;
            case 'r': out += '\r'; break;
            case 't': out += '\t'; break;
            case 'u': {
                if (i_ + 4 > s_.size()) fail("bad \\u escape");
                const unsigned code = unsigned(std::stoul(s_.substr(i_, 4), nullptr, 16));
                i_ += 4;
                if (code < 0x80) {
                    out += char(code);
                } else if (code < 0x800) {
                    out += char(0xC0 | (code >> 6));
                    out += char(0x80 | (code & 0x3F));
                } else {
                    out += char(0xE0 | (code >> 12));
                    out += char(0x80 | ((code >> 6) & 0x3F));
                    out += char(0x80 | (code & 0x3F));
                }
                break;
            }
            default: out += c; // \" \\ \/
            }
        }
        if (i_ >= s_.size()) fail("unterminated string");
        ++i_;
        return out;
    }

    const std::string& s_;
    size_t i_ = 0;
};

// ---- The run ---------------------------------------------------------------------------

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

const char* const kModes[] = {"train_fwd", "infer_fwd", "bwd"};

// One benchmark: bn/<mode>/<shape>/<layout>/t:<threads>/<impl>[/real_time].
struct Measurement {
    bool present = false;
    std::vector<double> times_ns; // the runs (rounds, or repetitions), in the order of the run
    std::vector<double> rounds;   // each run's "round" counter (NaN without one)
    double median_ns = NAN;       // the "median" aggregate, when there is one
    double cv = NAN;              // the "cv" aggregate (a fraction), when there is one
    std::vector<double> others;   // the runs' share of the CPUs other processes took
    double others_median = NAN;
    double bytes = NAN;
    std::string label, error;

    double time_ns() const { return times_ns.empty() ? median_ns : median(times_ns); }
    // Coefficient of variation of the runs.
    double spread() const {
        if (times_ns.size() < 2) return cv;
        double sum = 0, sq = 0;
        for (double t : times_ns) sum += t;
        const double mean = sum / double(times_ns.size());
        for (double t : times_ns) sq += (t - mean) * (t - mean);
        return std::sqrt(sq / double(times_ns.size() - 1)) / mean;
    }
    bool ok() const { return present && error.empty() && time_ns() > 0; }
    double others_cpu() const { return others.empty() ? others_median : median(others); }
};

// Run i's key for pairing: its round and how many runs of that round came before it
// (repetitions of a round), or {i, 0} when a run has no round counter.
std::vector<std::pair<double, int>> pairing_keys(const Measurement& m) {
    std::vector<std::pair<double, int>> keys;
    std::map<double, int> seen;
    const bool labelled = std::none_of(m.rounds.begin(), m.rounds.end(), [](double r) { return std::isnan(r); });
    for (size_t i = 0; i < m.times_ns.size(); ++i) {
        if (!labelled) {
            keys.emplace_back(double(i), 0);
            continue;
        }
        keys.emplace_back(m.rounds[i], seen[m.rounds[i]]++);
    }
    return keys;
}

// b's time over a's: the median of the ratios of their runs taken side by side (same
// round, by the runs' "round" counters; by position in the run for JSON without them),
// or the ratio of their medians when their runs do not pair up.
double time_ratio(const Measurement& b, const Measurement& a) {
    if (!a.ok() || !b.ok()) return NAN;
    const double of_medians = b.time_ns() / a.time_ns();
    if (a.times_ns.size() != b.times_ns.size() || a.times_ns.empty()) return of_medians;
    std::map<std::pair<double, int>, double> b_time;
    const auto b_keys = pairing_keys(b), a_keys = pairing_keys(a);
    for (size_t i = 0; i < b.times_ns.size(); ++i) b_time[b_keys[i]] = b.times_ns[i];
    std::vector<double> r;
    for (size_t i = 0; i < a.times_ns.size(); ++i) {
        const auto it = b_time.find(a_keys[i]);
        if (it == b_time.end()) return of_medians;
        r.push_back(it->second / a.times_ns[i]);
    }
    return median(r);
}

struct Case {
    std::string mode, shape, layout, threads; // threads: "2"
    Measurement normkit, roofline, two_pass, onednn;

    double gbps() const { return normkit.ok() && normkit.bytes > 0 ? normkit.bytes / normkit.time_ns() : NAN; }
    double roofline_gbps() const {
        return roofline.ok() && roofline.bytes > 0 ? roofline.bytes / roofline.time_ns() : NAN;
    }
    double onednn_gbps() const { return onednn.ok() && onednn.bytes > 0 ? onednn.bytes / onednn.time_ns() : NAN; }
    // Fraction of the roofline's speed; oneDNN time over normkit time.
    double of_roofline() const { return time_ratio(roofline, normkit); }
    double of_two_pass() const { return time_ratio(two_pass, normkit); }
    double two_pass_of_roofline() const { return time_ratio(roofline, two_pass); }
    double x_onednn() const { return time_ratio(onednn, normkit); }
    // The worst of the implementations.
    double worst(double (*of)(const Measurement&)) const {
        double w = NAN;
        for (const Measurement* m : {&normkit, &roofline, &two_pass, &onednn}) {
            const double v = m->ok() ? of(*m) : NAN;
            if (!std::isnan(v)) w = std::isnan(w) ? v : std::max(w, v);
        }
        return w;
    }
    double noise() const { return worst([](const Measurement& m) { return m.spread(); }); }
    double others_cpu() const { return worst([](const Measurement& m) { return m.others_cpu(); }); }
    std::string title() const { return mode + " " + shape + " " + layout + " t:" + threads; }
};

double to_ns(double value, const std::string& unit) {
    if (unit == "ns") return value;
    if (unit == "us") return value * 1e3;
    if (unit == "ms") return value * 1e6;
    if (unit == "s") return value * 1e9;
    return NAN;
}

std::vector<std::string> split(const std::string& s, char sep) {
    std::vector<std::string> parts;
    std::stringstream in(s);
    for (std::string part; std::getline(in, part, sep);) parts.push_back(part);
    return parts;
}

double geomean(const std::vector<double>& values) {
    if (values.empty()) return NAN;
    double log_sum = 0;
    for (double v : values) log_sum += std::log(v);
    return std::exp(log_sum / double(values.size()));
}

std::string fmt(const char* format, double value) {
    if (std::isnan(value)) return "-";
    char buf[64];
    std::snprintf(buf, sizeof buf, format, value);
    return buf;
}

// A value under a threshold, printed rounded down to the format's last digit `unit`, so
// that a miss never prints as the threshold it missed (49.96% as 49.9%, not 50.0%).
std::string fmt_below(const char* format, double value, double unit) {
    return fmt(format, std::floor(value / unit + 1e-6) * unit);
}

struct Run {
    std::vector<Case> cases; // in the order of the run
    int runs = 0; // of each benchmark: rounds x repetitions
    bool any_onednn = false;
};

Run collect(const Json& root) {
    const Json* benchmarks = root.get("benchmarks");
    if (benchmarks == nullptr || benchmarks->type != Json::Array) throw std::runtime_error("no \"benchmarks\" array");
    Run run;
    std::map<std::string, size_t> index;
    for (const Json& b : benchmarks->array) {
        const std::string run_name = b.text("run_name", b.text("name"));
        // Google Benchmark appends its own parts ("/real_time", "/min_time:..."): ignored.
        const std::vector<std::string> parts = split(run_name, '/');
        if (parts.size() < 6 || parts[0] != "bn" || parts[4].compare(0, 2, "t:") != 0) continue;
        const std::string key = parts[1] + "/" + parts[2] + "/" + parts[3] + "/" + parts[4];
        auto [it, added] = index.emplace(key, run.cases.size());
        if (added) run.cases.push_back(Case{parts[1], parts[2], parts[3], parts[4].substr(2), {}, {}, {}, {}});
        Case& c = run.cases[it->second];
        const std::string& impl = parts[5];
        Measurement* m = impl == "normkit"    ? &c.normkit
                         : impl == "roofline" ? &c.roofline
                         : impl == "two_pass" ? &c.two_pass
                         : impl == "onednn"   ? &c.onednn
                                              : nullptr;
        if (m == nullptr) continue;
        if (impl == "onednn") run.any_onednn = true;
        m->present = true;
        if (b.flag("error_occurred")) m->error = b.text("error_message", "error");
        const double t = to_ns(b.num("real_time"), b.text("time_unit", "ns"));
        const std::string aggregate = b.text("run_type") == "aggregate" ? b.text("aggregate_name") : "";
        if (aggregate.empty()) {
            m->times_ns.push_back(t);
            m->rounds.push_back(b.num("round"));
            if (!std::isnan(b.num("others_cpu"))) m->others.push_back(b.num("others_cpu"));
        }
        if (aggregate == "median") {
            m->median_ns = t;
            m->others_median = b.num("others_cpu");
        }
        if (aggregate == "cv") m->cv = b.num("real_time");
        if (aggregate.empty() || aggregate == "median") { // the stddev / cv rows hold no bytes
            if (b.num("bytes") > 0) m->bytes = b.num("bytes");
            if (m->label.empty()) m->label = b.text("label");
        }
    }
    for (const Case& c : run.cases) run.runs = std::max(run.runs, int(c.normkit.times_ns.size()));
    return run;
}

// ---- Targets (from the project's issue) ------------------------------------------------

constexpr double kInferenceMin = 0.90;       // inference forward: every case
constexpr double kTrainingGeomean = 0.75;    // training forward and backward: geomean ...
constexpr double kTrainingMin = 0.50;        // ... and every case
constexpr double kOnednnGeomean = 2.0;       // training forward and backward vs oneDNN
constexpr double kOnednnMin = 1.0;           // never slower than oneDNN, any mode

// Other processes took more than this share of the CPUs during a measurement: rerun it.
constexpr double kDisturbed = 0.10;

bool is_training(const std::string& mode) { return mode == "train_fwd" || mode == "bwd"; }

} // namespace

int main(int argc, char** argv) {
    bool strict = false;
    const char* path = nullptr;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--strict") == 0) strict = true;
        else if (path == nullptr && argv[i][0] != '-') path = argv[i];
        else {
            std::fprintf(stderr, "usage: %s [--strict] <normkit_bench.json>\n", argv[0]);
            return 2;
        }
    }
    if (path == nullptr) {
        std::fprintf(stderr, "usage: %s [--strict] <normkit_bench.json>\n", argv[0]);
        return 2;
    }

    Json root;
    Run run;
    try {
        std::ifstream in(path, std::ios::binary);
        if (!in) throw std::runtime_error("cannot open the file");
        std::stringstream text;
        text << in.rdbuf();
        const std::string s = text.str();
        root = JsonParser(s).parse();
        run = collect(root);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "normkit_bench_summary: %s: %s\n", path, e.what());
        return 2;
    }
    if (run.cases.empty()) {
        std::fprintf(stderr, "normkit_bench_summary: %s: no bn/... benchmark in this file\n", path);
        return 2;
    }

    // ---- Header
    std::printf("normkit_bench summary of %s\n", path);
    if (const Json* ctx = root.get("context")) {
        std::string load;
        if (const Json* avg = ctx->get("load_avg"))
            for (const Json& v : avg->array) load += " " + fmt("%.2f", v.number);
        std::printf("  %s, %d CPUs; normkit %s (%s); oneDNN %s\n", ctx->text("date").c_str(),
                    int(ctx->num("num_cpus", 0)), ctx->text("normkit_version", "?").c_str(),
                    ctx->text("normkit_isa", "?").c_str(), ctx->text("onednn_version", "?").c_str());
        std::printf("  load average at start:%s (the machine is shared: compare ratios, not GB/s across runs)\n",
                    load.empty() ? " ?" : load.c_str());
    }
    std::printf("  %zu cases, %d run(s) of each implementation, wall clock. GB/s = minimum traffic (forward 8,\n"
                "  backward 12 bytes/element) over the median time. %% roofline = roofline time / normkit time,\n"
                "  %% 2-pass = two-pass kernel time / normkit time (training forward and backward: the\n"
                "  roofline's loop after plain sums over the same data, channels-first in 128 KB blocks,\n"
                "  channels-last and NC over each thread's whole share: the reads of a two-pass batch norm\n"
                "  without its accuracy; not a target), x oneDNN = oneDNN time / normkit\n"
                "  time: medians of the rounds' ratios (each round runs the implementations back to back).\n"
                "  Of the implementations, the largest: noise = coefficient of variation of the runs;\n"
                "  others = share of the CPUs other processes took meanwhile.\n\n",
                run.cases.size(), std::max(run.runs, 1));

    // ---- Table
    std::printf("%-9s  %-15s  %-6s  %3s  %12s  %13s  %10s  %8s  %11s  %8s  %6s  %6s  %s\n", "mode", "shape",
                "layout", "thr", "normkit GB/s", "roofline GB/s", "% roofline", "% 2-pass", "oneDNN GB/s", "x oneDNN",
                "noise", "others", "oneDNN impl");
    std::string last_mode;
    for (const Case& c : run.cases) {
        if (!last_mode.empty() && c.mode != last_mode) std::printf("\n");
        last_mode = c.mode;
        std::printf("%-9s  %-15s  %-6s  %3s  %12s  %13s  %10s  %8s  %11s  %8s  %6s  %6s  %s\n", c.mode.c_str(),
                    c.shape.c_str(), c.layout.c_str(), c.threads.c_str(), fmt("%.2f", c.gbps()).c_str(),
                    fmt("%.2f", c.roofline_gbps()).c_str(), fmt("%.1f%%", 100 * c.of_roofline()).c_str(),
                    fmt("%.1f%%", 100 * c.of_two_pass()).c_str(), fmt("%.2f", c.onednn_gbps()).c_str(),
                    fmt("%.2fx", c.x_onednn()).c_str(), fmt("%.1f%%", 100 * c.noise()).c_str(),
                    fmt("%.0f%%", 100 * c.others_cpu()).c_str(), c.onednn.label.c_str());
    }

    // ---- Geometric means, and the targets
    std::vector<std::string> missed;
    auto miss = [&](const std::string& what) { missed.push_back(what); };
    std::vector<std::string> threads;
    for (const Case& c : run.cases)
        if (std::find(threads.begin(), threads.end(), c.threads) == threads.end()) threads.push_back(c.threads);

    std::printf("\ngeometric means (2-pass: the two-pass kernel's %% of the roofline)\n"
                "%-9s  %-7s  %5s  %10s  %8s  %8s  %20s\n",
                "mode", "threads", "cases", "% roofline", "% 2-pass", "x oneDNN", "2-pass % roofline");
    for (const char* mode : kModes) {
        std::vector<std::string> groups = threads;
        if (threads.size() > 1) groups.push_back("all");
        for (const std::string& group : groups) {
            std::vector<double> roof, two_pass, two_pass_roof, onednn;
            int cases = 0;
            for (const Case& c : run.cases) {
                if (c.mode != mode || (group != "all" && c.threads != group)) continue;
                ++cases;
                if (!std::isnan(c.of_roofline())) roof.push_back(c.of_roofline());
                if (!std::isnan(c.of_two_pass())) two_pass.push_back(c.of_two_pass());
                if (!std::isnan(c.two_pass_of_roofline())) two_pass_roof.push_back(c.two_pass_of_roofline());
                if (!std::isnan(c.x_onednn())) onednn.push_back(c.x_onednn());
            }
            if (cases == 0) continue;
            const double g_roof = geomean(roof), g_onednn = geomean(onednn);
            std::printf("%-9s  %-7s  %5d  %10s  %8s  %8s  %20s\n", mode, group.c_str(), cases,
                        fmt("%.1f%%", 100 * g_roof).c_str(), fmt("%.1f%%", 100 * geomean(two_pass)).c_str(),
                        fmt("%.2fx", g_onednn).c_str(), fmt("%.1f%%", 100 * geomean(two_pass_roof)).c_str());
            if (group != groups.back() || !is_training(mode)) continue;
            if (!std::isnan(g_roof) && g_roof < kTrainingGeomean)
                miss(std::string(mode) + " geomean: " + fmt_below("%.1f%%", 100 * g_roof, 0.1) + " of roofline < " +
                     fmt("%.0f%%", 100 * kTrainingGeomean));
            if (!std::isnan(g_onednn) && g_onednn < kOnednnGeomean)
                miss(std::string(mode) + " geomean: " + fmt_below("%.2fx", g_onednn, 0.01) + " oneDNN < " +
                     fmt("%.1fx", kOnednnGeomean));
        }
    }

    std::vector<std::string> disturbed;
    for (const Case& c : run.cases) {
        const double others = c.others_cpu();
        const std::string note =
            others > kDisturbed ? "   [disturbed: others took " + fmt("%.0f%%", 100 * others) + "]" : "";
        if (!note.empty()) disturbed.push_back(c.title());
        for (const Measurement* m : {&c.normkit, &c.roofline, &c.two_pass, &c.onednn})
            if (m->present && !m->error.empty()) miss(c.title() + ": error: " + m->error);
        if (!c.normkit.present || !c.roofline.present) miss(c.title() + ": normkit or roofline not measured");
        const double roof = c.of_roofline(), x = c.x_onednn();
        const double floor = c.mode == "infer_fwd" ? kInferenceMin : kTrainingMin;
        if (!std::isnan(roof) && roof < floor)
            miss(c.title() + ": " + fmt_below("%.1f%%", 100 * roof, 0.1) + " of roofline < " + fmt("%.0f%%", 100 * floor) +
                 note);
        if (!std::isnan(x) && x < kOnednnMin)
            miss(c.title() + ": " + fmt_below("%.2fx", x, 0.01) + " oneDNN < " + fmt("%.1fx", kOnednnMin) + note);
    }
    if (!disturbed.empty()) {
        std::printf("\n%zu case(s) ran while other processes took > %.0f%% of the CPUs: their ratios are suspect,\n"
                    "rerun them (NK_BENCH_FILTER) when the machine is quieter:\n",
                    disturbed.size(), 100 * kDisturbed);
        for (const std::string& d : disturbed) std::printf("  %s\n", d.c_str());
    }

    std::printf("\ntargets: inference forward >= %.0f%% of roofline in every case; training forward and\n"
                "  backward >= %.0f%% geomean and >= %.0f%% in every case, >= %.1fx oneDNN geomean;\n"
                "  every case of every mode >= %.1fx oneDNN.\n",
                100 * kInferenceMin, 100 * kTrainingGeomean, 100 * kTrainingMin, kOnednnGeomean, kOnednnMin);
    if (!run.any_onednn) std::printf("  (oneDNN was not measured in this run: its targets are not checked)\n");
    if (missed.empty()) {
        std::printf("all targets met.\n");
        return 0;
    }
    std::printf("missed (%zu):\n", missed.size());
    for (const std::string& m : missed) std::printf("  %s\n", m.c_str());
    return strict ? 1 : 0;
}
